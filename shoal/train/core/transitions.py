"""Minibatches of single transitions drawn uniformly from a recorded dataset (behaviour cloning, IQL).

    sampler = TransitionSampler(dataset, device="cpu")
    batch = sampler.sample(256, generator)          # a TransitionBatch of 256 steps

The dataset's arrays become tensors once (shared with numpy on a CPU, no copy); a minibatch is one gather per
field. The draws come from the caller's ``torch.Generator`` only, so a run restored with its generator state draws
the same minibatches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from shoal.datasets import OfflineDataset

__all__ = ["TransitionBatch", "TransitionSampler"]


@dataclass
class TransitionBatch:
    """``B`` transitions ``(s, a, r, s')`` of a dataset.

    Attributes:
        obs, next_obs: flat rows ``[B, flat_size]`` of the layout's flat dtype: the observation acted on and the
            one after the step (the final observation after an episode's last step).
        actions: flat actions ``[B, *flat_action_shape]`` (int64 for discrete layouts, float32 otherwise).
        rewards: float32 ``[B]``.
        terminals: float32 ``[B]``: 1 where the episode terminated with this step (no bootstrap); a truncated
            episode bootstraps from its final observation (0).
        action_masks, next_action_masks: bool ``[B, mask_width]`` legal actions at ``obs`` / ``next_obs``, or None.
        agent_ids: int64 ``[B]`` the slot each step was played in, or None (not asked for).
    """

    obs: Tensor
    actions: Tensor
    rewards: Tensor
    terminals: Tensor
    next_obs: Tensor
    action_masks: Tensor | None
    next_action_masks: Tensor | None
    agent_ids: Tensor | None


class TransitionSampler:
    """Uniform minibatches of the steps of ``dataset`` (see the module docstring).

    Args:
        dataset: the recorded episodes.
        device: where the minibatches go (the whole dataset is moved there once).
        rewards: float32 ``[T]`` rewards to learn from in place of the dataset's (e.g. scaled); None: its own.
        agent_ids: give each minibatch the slot of its steps (policies that embed agent ids).
    """

    def __init__(self, dataset: OfflineDataset, device: torch.device | str, *, rewards: np.ndarray | None = None,
                 agent_ids: bool = False) -> None:
        device = torch.device(device)

        def tensor(array: np.ndarray) -> Tensor:
            return torch.from_numpy(np.ascontiguousarray(array)).to(device)

        self.num_steps = dataset.num_steps
        self.device = device
        self.observations = tensor(dataset.observations)
        self.actions = tensor(dataset.actions)
        self.rewards = tensor(np.asarray(dataset.rewards if rewards is None else rewards, np.float32))
        self.terminals = tensor(dataset.terminations.astype(np.float32))
        self.obs_index = tensor(dataset.obs_index)
        masks = dataset.action_masks
        # every action legal everywhere: no masks, so the policy skips masking (as acting does)
        self.action_masks = None if masks is None or masks.all() else tensor(masks.astype(np.bool_))
        steps_agents = dataset.agents[dataset.episode_of_step].astype(np.int64)
        self.agent_ids = tensor(steps_agents) if agent_ids else None

    def sample(self, batch_size: int, generator: torch.Generator) -> TransitionBatch:
        """``batch_size`` steps drawn uniformly with replacement (by ``generator``, on the CPU)."""
        steps = torch.randint(self.num_steps, (batch_size,), generator=generator).to(self.device)
        rows = self.obs_index[steps]
        masks = self.action_masks
        return TransitionBatch(
            obs=self.observations[rows],
            actions=self.actions[steps],
            rewards=self.rewards[steps],
            terminals=self.terminals[steps],
            next_obs=self.observations[rows + 1],
            action_masks=None if masks is None else masks[rows],
            next_action_masks=None if masks is None else masks[rows + 1],
            agent_ids=None if self.agent_ids is None else self.agent_ids[steps],
        )
