"""finebench: which way of adapting a pretrained CNN to a fine-grained dataset is best for the same compute."""

__version__ = "0.1.0"
