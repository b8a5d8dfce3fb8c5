"""Soft actor-critic: the off-policy algorithm on the shared training loop (:mod:`shoal.train.sac.trainer`)."""
