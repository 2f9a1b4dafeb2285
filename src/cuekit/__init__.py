"""cuekit: ten visual-recognition research works as one tested PyTorch library."""
__version__ = "0.1.0"
