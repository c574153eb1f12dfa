"""DSDR: dual-scale diversity regularization for GRPO (see :mod:`.regularizer`)."""
