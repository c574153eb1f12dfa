"""Exact augmented Lagrangian with adaptive randomized-sketching Newton (AdaSketch-Newton)."""
