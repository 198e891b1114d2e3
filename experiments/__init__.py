"""Experiment binaries (absl flags + ml_collections configs), one per paper table."""
