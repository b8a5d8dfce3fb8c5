"""A dataset is checked against the env it trains for, naming what does not fit; its fingerprint is its data."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from shoal import vector
from shoal.datasets import OfflineDataset
from shoal.emulation.base import action_mask_width
from shoal.errors import APIUsageError, DatasetError
from shoal.train import TrainConfig
from shoal.train.offline.data import check_dataset, dataset_fingerprint, resolve_dataset
from shoal.train.record import record_dataset
from shoal.train.runs.resolve import resolve_env
from tests.emulation.helpers import HybridActionEnv
from tests.train.offline.recorded import cartpole_expert, record


@pytest.fixture(scope="module")
def cartpole() -> object:
    vec = vector.make(resolve_env("CartPole-v1"), 1)
    yield vec
    vec.close()


def test_a_recorded_dataset_fits_its_env(cartpole: object) -> None:
    check_dataset(record("CartPole-v1", cartpole_expert, 1), cartpole, "expert")


def _forbid(dataset: object, step: int) -> np.ndarray:
    """Masks with every action legal but the one recorded at ``step`` (one row per observation)."""
    masks = np.ones((len(dataset.observations), 2), np.bool_)  # type: ignore[attr-defined]
    masks[step, dataset.actions[step]] = False  # step 4 of the first episode acts on observation row 4
    return masks


@pytest.mark.parametrize(("change", "words"), [
    (lambda d: {"agents": np.asarray([1], np.int32)}, r"episodes played in slots \[1\], but the env has 1 slot"),
    (lambda d: {"rewards": np.where(np.arange(d.num_steps) == 7, np.nan, d.rewards).astype(np.float32)},
     "the reward at step 7 is nan"),
    (lambda d: {"action_masks": _forbid(d, step=4)},
     r"the action \d recorded at step 4 \(episode 0, its step 4\) is illegal under its action mask"),
])
def test_a_dataset_that_does_not_fit_is_refused_saying_what(cartpole: object, change: object, words: str) -> None:
    dataset = record("CartPole-v1", cartpole_expert, 1)
    with pytest.raises(DatasetError, match=words):
        check_dataset(dataclasses.replace(dataset, **change(dataset)), cartpole, "expert")  # type: ignore[operator]


def test_the_fingerprint_follows_the_data_not_the_object() -> None:
    a, b = record("CartPole-v1", cartpole_expert, 2), record("CartPole-v1", cartpole_expert, 2)
    assert a is not b and dataset_fingerprint(a) == dataset_fingerprint(b)
    assert dataset_fingerprint(a) != dataset_fingerprint(record_dataset("random", "CartPole-v1", 50))
    flipped = dataclasses.replace(a, actions=1 - a.actions)
    assert dataset_fingerprint(flipped) != dataset_fingerprint(a)
    retyped = dataclasses.replace(a, agent_types=np.ones(a.num_episodes, np.int32))  # the same steps, other types
    assert dataset_fingerprint(retyped) != dataset_fingerprint(a)


def test_a_given_dataset_wins_and_anything_else_is_refused() -> None:
    dataset = record("CartPole-v1", cartpole_expert, 1)
    assert resolve_dataset(TrainConfig(algo="bc"), dataset) == (dataset, "the dataset given")
    with pytest.raises(APIUsageError, match=r"dataset= must be a shoal\.datasets\.OfflineDataset, got dict"):
        resolve_dataset(TrainConfig(algo="bc"), {"observations": []})  # type: ignore[arg-type]
    with pytest.raises(APIUsageError, match="is read by the offline algorithms"):
        TrainConfig(algo="sac", dataset="data/x").validate()


def _forbid_entry(dataset: OfflineDataset, step: int, entry: int, width: int, offset: int) -> np.ndarray:
    """Masks ``[observations, width]`` with every choice legal but the one entry ``entry`` (its mask columns start
    at ``offset``) took at ``step``."""
    masks = np.ones((len(dataset.observations), width), np.bool_)
    masks[dataset.obs_index[step], offset + int(dataset.actions[step, entry])] = False
    return masks


@pytest.mark.parametrize(("env", "entry", "offset", "width"), [
    ("nested", 1, 3, 5),  # MultiDiscrete([3, 2]): the switch's choice
    (HybridActionEnv, 0, 0, 9),  # fire (2), power (4), weapon (3), then aim: fire's choice
])
def test_an_illegal_choice_of_any_discrete_entry_is_refused_naming_it(env: Any, entry: int, offset: int,
                                                                      width: int) -> None:
    dataset = record_dataset("random", env, 30, seed=0)
    vec = vector.make(resolve_env("nested") if env == "nested" else env, 1)
    try:
        assert action_mask_width(vec.action_layout) == width
        episode = int(dataset.episode_of_step[12])
        inside = 12 - int(dataset.episode_offsets[episode])
        bad = dataclasses.replace(dataset, action_masks=_forbid_entry(dataset, 12, entry, width, offset))
        with pytest.raises(DatasetError, match=rf"entry {entry} of the action \d recorded at step 12 \(episode "
                                               rf"{episode}, its step {inside}\) is illegal under its action mask"):
            check_dataset(bad, vec, "foreign")
        check_dataset(dataclasses.replace(dataset, action_masks=np.ones((len(dataset.observations), width), bool)),
                      vec, "foreign")  # every choice legal: accepted
        actions = dataset.actions.copy()
        actions[3, entry] = 2  # a third choice of a two-way entry
        with pytest.raises(DatasetError, match=rf"entry {entry} of the action 2(\.0)? recorded at step 3 .* is not "
                                               r"one of its 2 choices \(0 \.\. 1\)"):
            check_dataset(dataclasses.replace(dataset, actions=actions), vec, "foreign")  # also without masks
    finally:
        vec.close()
