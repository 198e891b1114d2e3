"""Analysis tools: alignment diagnostics (and, later, metafeature analysis)."""

from alearn.analysis.alignment import (alignment_angles, angle, feedback_angles, plot_alignment,
                                       unused_feedback_layers, updates_for_loss)
from alearn.analysis.metafeatures import (inter_class_distance, intra_class_distance,
                                          metafeature_quality, model_features)

__all__ = ["alignment_angles", "angle", "feedback_angles", "inter_class_distance",
           "intra_class_distance", "metafeature_quality", "model_features", "plot_alignment",
           "unused_feedback_layers", "updates_for_loss"]
