"""Deep unfolded ISTA/IHT with learned step sizes, trained supervised or unsupervised (import
:mod:`.unfolded`)."""
