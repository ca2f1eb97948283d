"""Fixtures for the docker tests."""
