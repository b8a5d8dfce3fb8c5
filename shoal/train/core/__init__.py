"""The algorithm core: rollout and replay storage, advantages, value normalization, the PPO and SAC updates, and the
centralized critic's input (:mod:`shoal.train.core.centralized`, shared by MAPPO and SAC).

Computations over tensors and arrays; nothing here knows about vector envs, run directories or processes (the
centralized input only wraps an env's constructor, to report its ``state()``).
"""
