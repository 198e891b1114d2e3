"""Analysis tools: alignment diagnostics (and, later, metafeature analysis)."""

from alearn.analysis.alignment import alignment_angles, angle, feedback_angles, plot_alignment

__all__ = ["alignment_angles", "angle", "feedback_angles", "plot_alignment"]
