"""Scaling-law crossover (Xiao 2024): power-law fits and where they cross (:mod:`.crossover`)."""
