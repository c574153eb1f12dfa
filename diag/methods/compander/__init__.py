"""Weight Compander: a bounded reparameterisation of every weight (see :mod:`.compander`)."""
