"""modelreuse: inherit a trained model, evaluate it on a new domain, gate, adapt, serve and retrain it."""

__version__ = "0.1.0"
