"""JAWS: a Burgers generator (:mod:`.burgers`), a 1-D FNO and the adaptive Jacobian penalty."""
