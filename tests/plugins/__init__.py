"""pytest plugins with the fixtures for the real parts: cgroups, Docker, Ollama stand-in."""
