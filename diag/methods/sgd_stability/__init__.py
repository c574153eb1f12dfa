"""The implicit regularization of dynamical stability in SGD: tr(H) ≤ 2/η (spec only)."""
