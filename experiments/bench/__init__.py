"""Benchmarks and checks of step time, memory and XLA cost (``python -m experiments.bench.<name>``)."""
