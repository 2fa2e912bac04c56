"""Keras' 'Image classification from scratch' (Cats vs Dogs) as a DVC pipeline (version: pyproject.toml)."""
