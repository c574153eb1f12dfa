"""SPECTRA: the soft spectral clip (:mod:`.spectral_clip`), its wrapper (:mod:`.spectra`)."""
