"""Learning to Relax: SOR's ω chosen online by a bandit that sees only iteration counts."""
