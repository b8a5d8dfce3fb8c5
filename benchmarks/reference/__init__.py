"""Reference implementations the learning suite (``benchmarks/learning.py``) runs beside shoal."""
