"""Label-independent deep subspace clustering (import :mod:`.clustering`)."""
