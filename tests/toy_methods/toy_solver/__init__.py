"""Richardson iteration for A x = b (a toy solver for the registry and driver tests)."""
