"""IGNITE: a surrogate gradient-norm penalty for offline optimization (:mod:`.sharpness`)."""
