"""MAPPO: PPO with a centralized critic and value normalization (:mod:`shoal.train.mappo.trainer`)."""
