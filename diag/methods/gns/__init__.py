"""Gradient-Normalized Smoothness: the gradient-regularized Newton step with an adaptive γ
(import :mod:`.newton`)."""
