"""edgewatch's `diag` command and its method library (losses, optimizer wrappers, solvers)."""

__version__ = "0.1.0"
