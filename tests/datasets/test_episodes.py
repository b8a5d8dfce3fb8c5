"""OfflineDataset refuses arrays that do not fit its episodes or its action layout, naming the field."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from shoal.errors import APIUsageError
from shoal.train.record import record_dataset


def test_the_per_episode_fields_need_one_entry_per_episode() -> None:
    dataset = record_dataset("random", "CartPole-v1", 60, seed=0)
    episodes = dataset.num_episodes
    assert dataset.agents.shape == dataset.agent_types.shape == (episodes,)  # filled in when not given
    for name in ("agents", "agent_types"):
        with pytest.raises(APIUsageError, match=rf"field '{name}' has shape \({episodes + 1},\); expected "
                                                rf"\({episodes},\), one entry per episode"):
            dataclasses.replace(dataset, **{name: np.zeros(episodes + 1, np.int32)})


def test_action_masks_need_the_width_of_the_action_layout() -> None:
    dataset = record_dataset("random", "nested", 40, seed=0)  # MultiDiscrete([3, 2]): 5 mask columns
    rows = len(dataset.observations)
    assert dataclasses.replace(dataset, action_masks=np.ones((rows, 5), bool)).action_masks.shape == (rows, 5)
    with pytest.raises(APIUsageError, match=rf"action_masks has shape \({rows}, 3\); the multi_discrete actions "
                                            rf"MultiDiscrete\(\[3 2\]\) need \[{rows}, 5\]"):
        dataclasses.replace(dataset, action_masks=np.ones((rows, 3), bool))
    pendulum = record_dataset("random", "Pendulum-v1", 20, seed=0)
    with pytest.raises(APIUsageError, match=r"the continuous actions .* need none \(leave action_masks=None\)"):
        dataclasses.replace(pendulum, action_masks=np.ones((len(pendulum.observations), 1), bool))
