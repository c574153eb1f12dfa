"""Latent Spectral Models: the network (:mod:`.model`), a Darcy generator (:mod:`.darcy`)."""
