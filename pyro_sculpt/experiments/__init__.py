"""Layer 6: the paper's experiments, end to end."""
