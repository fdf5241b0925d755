"""Hierarchical Reasoning Model (arXiv 2506.21734): model, optimizers and puzzle tasks in plain PyTorch + NumPy."""

__version__ = "0.1.0"
