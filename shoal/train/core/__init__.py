"""The algorithm core: rollout storage, advantages, value normalization and the PPO loss and update.

Pure computations over tensors and arrays; nothing here knows about vector envs, run directories or processes.
"""
