"""Experiment binaries: the entry points train, compare, reproduce, report at the top; the
rooms paper/, bench/, studies/ (experiments/README.md)."""
