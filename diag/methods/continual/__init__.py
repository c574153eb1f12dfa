"""Rehearsal-free class-incremental learning: prediction distillation (see :mod:`.distill`)."""
