"""Fixtures for the ollama tests."""
