"""Sinkhorn-Newton-Sparse and the log-domain Sinkhorn baseline (import :mod:`.newton`)."""
