"""zeroflow: forward-pass (zeroth-order) optimizers against catastrophic forgetting."""

__version__ = "0.1.0"
