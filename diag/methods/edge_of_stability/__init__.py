"""Edge of stability: λ_max → 2/η under full-batch GD (spec only)."""
