"""Least squares by full-batch GD (a toy trainer for the registry and driver tests)."""
