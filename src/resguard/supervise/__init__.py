"""Supervise a command under a memory budget: ``resguard run -- CMD``."""
