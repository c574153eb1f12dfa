"""Transductive few-shot: the Laplacian-regularised bound optimizer (import :mod:`.laplacian`)."""
