"""Experiments run by the ``neuro-meta`` command line (and importable from scripts)."""
