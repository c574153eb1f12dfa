"""PS-KD: self-distillation with progressively refined targets (see :mod:`.targets`)."""
