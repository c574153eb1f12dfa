"""Self-Tuning Networks: gated best-response layers and tuned dropout (import :mod:`.hyper`)."""
