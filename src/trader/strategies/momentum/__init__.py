"""Model-free momentum: past-return scores through Qlib expressions (:mod:`.strategy`)."""
