"""notebook-agent: a ClearML-compatible execution agent for Jupyter and Colab kernels."""

__version__ = "0.1.0"
