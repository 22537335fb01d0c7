"""The HTTP API that classifies uploaded images."""
