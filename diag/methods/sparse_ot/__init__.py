"""Sparsity-constrained optimal transport (import :mod:`.sparse_ot`)."""
