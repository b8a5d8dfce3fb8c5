"""check_dataset_matches: a dataset is used only with an env whose rows and actions it holds."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from shoal import vector
from shoal.datasets import OfflineDataset, check_dataset_matches, load_dataset, save_dataset
from shoal.emulation import compile_layout
from shoal.errors import DatasetError
from shoal.train.record import record_dataset
from shoal.train.runs.resolve import resolve_env


def _layouts(env: str) -> tuple:
    vec = vector.make(resolve_env(env), 1)
    try:
        return vec.obs_layout, vec.action_layout
    finally:
        vec.close()


def test_a_dataset_fits_the_env_it_was_recorded_on(tmp_path) -> None:
    for env in ("CartPole-v1", "nested", "minigrid:MiniGrid-Empty-5x5-v0"):
        dataset = load_dataset(save_dataset(record_dataset("random", env, 50), tmp_path / env))
        check_dataset_matches(dataset, *_layouts(env), env=env)  # no error


def test_other_spaces_are_refused_naming_both() -> None:
    dataset = record_dataset("random", "CartPole-v1", 50)
    acrobot_obs, acrobot_actions = _layouts("Acrobot-v1")
    ours = re.escape(repr(dataset.obs_layout.space))
    with pytest.raises(DatasetError, match=rf"recorded on 'CartPole-v1'.*{ours}.*Acrobot-v1 observes Box\(.*\(6,\)"):
        check_dataset_matches(dataset, acrobot_obs, acrobot_actions, env="Acrobot-v1")
    cartpole_obs = gym.make("CartPole-v1").observation_space
    with pytest.raises(DatasetError, match=r"actions of Discrete\(2\), but the env takes actions of Discrete\(3\)"):
        check_dataset_matches(dataset, cartpole_obs, spaces.Discrete(3))


def test_text_coded_in_another_character_order_is_refused() -> None:
    dataset = record_dataset("random", "CartPole-v1", 20)
    ours = spaces.Dict({"word": spaces.Text(4, charset="abc")})
    theirs = spaces.Dict({"word": spaces.Text(4, charset="cba")})
    assert ours == theirs  # equal spaces, other codes
    worded = OfflineDataset(np.zeros((len(dataset.observations), 4), np.int32), dataset.actions, dataset.rewards,
                            dataset.terminations, dataset.truncations, dataset.episode_offsets, compile_layout(ours),
                            dataset.action_layout)
    with pytest.raises(DatasetError, match=r"text at obs\['word'\] with the characters 'abc'.*'cba'"):
        check_dataset_matches(worded, theirs, dataset.action_layout.space)
