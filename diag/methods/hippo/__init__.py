"""How to Train Your HiPPO: matrices, bases, online reconstruction (see :mod:`.hippo`)."""
