"""SPECTRA: soft spectral clipping of updates (import :mod:`.spectral_clip`)."""
