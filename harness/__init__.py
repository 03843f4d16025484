"""harness: train the same CNN many times and explain why its accuracy differs."""

__version__ = "0.1.0"
