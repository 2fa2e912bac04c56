"""Keras' 'Image classification from scratch' (Cats vs Dogs) as a DVC pipeline."""

__version__ = "0.1.0"
