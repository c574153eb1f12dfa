"""edgewatch inside the trainers people already use.

Each module imports its framework on import, so ``import diag`` stays free of them:

- :mod:`diag.integrations.lightning` — ``EdgewatchCallback`` for PyTorch Lightning ≥ 2
  (``pip install edgewatch[lightning]``);
- :mod:`diag.integrations.hf` — ``EdgewatchCallback`` for the Hugging Face ``Trainer``
  (``pip install edgewatch[hf]``);
- :mod:`diag.integrations.steering` — what both share: the controllers that act through the
  framework (learning rates of every optimizer and scheduler, the framework's checkpointing).
"""
