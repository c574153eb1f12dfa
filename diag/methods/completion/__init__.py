"""Matrix completion by alternating minimisation, with exact or few-step CG regressions."""
