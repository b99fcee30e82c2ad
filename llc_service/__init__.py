"""llc-service: measure the Local Learning Coefficient across training checkpoints."""
__version__ = "0.1.0"
