"""Learning from the Undesirable (LfU): see :mod:`.undesirable`."""
