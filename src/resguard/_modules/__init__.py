"""Private helpers shared by resguard's modules; nothing here is public API."""
