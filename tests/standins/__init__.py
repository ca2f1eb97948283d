"""Stand-ins for external services the tests cannot run here (e.g. an Ollama server)."""
