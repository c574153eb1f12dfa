"""Grokking at the Edge of Numerical Stability: StableMax, ⊥Grad (import the modules)."""
