"""One-off studies behind figures in docs/notes (``python -m experiments.studies.<name>``)."""
