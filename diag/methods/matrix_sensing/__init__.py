"""Over-parameterised matrix sensing: symmetric vs asymmetric GD, and the one-step rebalance."""
