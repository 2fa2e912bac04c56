"""What a trained model scored, and the figures of it: metrics from probabilities, and the plot stage's PNGs.
No Keras at import."""
