"""Muon under μP: Muon, the μP-faithful scale and update-level spectral control (:mod:`.muon`)."""
