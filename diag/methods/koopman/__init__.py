"""Limits and Powers of Koopman Learning: EDMD and ResDMD's residuals and pseudospectrum on the
Duffing oscillator (import :mod:`.resdmd`)."""
