"""Ghosts of Softmax: the ρ_a safe-step controller (import :mod:`.rho_control`)."""
