"""Light Schrödinger Bridge (import :mod:`.light_sb`)."""
