"""Reproducible speed and size measurements; run each as ``python -m benchmarks.bench_<name>``."""
