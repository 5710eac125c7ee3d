"""dynbench: efficiency benchmarking and profiling of Dynamic-LLaVA (arXiv 2412.00876)."""

__version__ = "0.1.0"
