"""Test support that ships with the engine, so third-party plugins can use it too."""
