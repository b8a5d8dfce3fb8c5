"""Minibatches of a dataset are its transitions exactly: the observation acted on, the one after (the final
observation at an episode's end), termination but not truncation, masks of both, the slot; drawn reproducibly."""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces

from shoal.datasets import OfflineDataset
from shoal.emulation import ActionLayout, compile_layout
from shoal.train.core.transitions import TransitionSampler


def _dataset() -> OfflineDataset:
    # two episodes: 3 steps ending in termination (slot 1), 2 steps cut by truncation (slot 0); observation row k
    # holds the value k, so every row's place can be checked
    obs_layout = compile_layout(spaces.Box(-100, 100, (2,), np.float32))
    action_layout = ActionLayout(spaces.Discrete(3))
    observations = np.repeat(np.arange(7, dtype=np.float32)[:, None], 2, 1)
    masks = np.ones((7, 3), np.bool_)
    masks[:, 2] = np.arange(7) % 2 == 0
    return OfflineDataset(observations, np.asarray([0, 1, 2, 1, 0]), np.asarray([1, 2, 3, 4, 5], np.float32),
                          np.asarray([False, False, True, False, False]), np.asarray([False] * 4 + [True]),
                          np.asarray([0, 3, 5]), obs_layout, action_layout, action_masks=masks,
                          agents=np.asarray([1, 0], np.int32))


def test_every_sampled_transition_is_the_recorded_one() -> None:
    dataset = _dataset()
    sampler = TransitionSampler(dataset, "cpu", agent_ids=True)
    batch = sampler.sample(500, torch.Generator().manual_seed(0))
    step = batch.rewards.long() - 1  # rewards are step + 1
    assert set(step.tolist()) == {0, 1, 2, 3, 4}
    obs_row = torch.tensor([0, 1, 2, 4, 5])[step]  # episode 1 starts at row 4: row 3 is episode 0's final one
    assert torch.equal(batch.obs[:, 0].long(), obs_row) and torch.equal(batch.next_obs[:, 0].long(), obs_row + 1)
    assert torch.equal(batch.actions, torch.tensor([0, 1, 2, 1, 0])[step])
    assert torch.equal(batch.terminals, (step == 2).float())  # the truncated last step still bootstraps
    assert torch.equal(batch.action_masks[:, 2], obs_row % 2 == 0)
    assert torch.equal(batch.next_action_masks[:, 2], (obs_row + 1) % 2 == 0)
    assert torch.equal(batch.agent_ids, (step < 3).long())


def test_the_same_generator_state_draws_the_same_minibatches_and_masks_all_legal_are_dropped() -> None:
    dataset = _dataset()
    a = TransitionSampler(dataset, "cpu").sample(64, torch.Generator().manual_seed(7))
    b = TransitionSampler(dataset, "cpu").sample(64, torch.Generator().manual_seed(7))
    assert torch.equal(a.rewards, b.rewards) and a.agent_ids is None
    every_legal = OfflineDataset(**{**dataset.__dict__, "action_masks": np.ones((7, 3), np.bool_)})
    assert TransitionSampler(every_legal, "cpu").sample(4, torch.Generator()).action_masks is None
    scaled = TransitionSampler(dataset, "cpu", rewards=dataset.rewards * 10)
    scaled = scaled.sample(64, torch.Generator().manual_seed(7))
    assert torch.equal(scaled.rewards, a.rewards * 10)
