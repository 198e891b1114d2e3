"""Reproduction machinery behind ``experiments.reproduce`` and ``experiments.report``: the
table registry, the cpu scale, the run kinds, the papers' numbers and claims."""
