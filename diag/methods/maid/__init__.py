"""MAID: an adaptively inexact first-order method for bilevel problems (the algorithm in
:mod:`.bilevel`, the test problems in :mod:`.problems`)."""
