"""A dataset is checked against the env it trains for, naming what does not fit; its fingerprint is its data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from shoal import vector
from shoal.errors import APIUsageError, DatasetError
from shoal.train import TrainConfig
from shoal.train.offline.data import check_dataset, dataset_fingerprint, resolve_dataset
from shoal.train.record import record_dataset
from shoal.train.runs.resolve import resolve_env
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
    (lambda d: {"action_masks": np.ones((len(d.observations), 3), np.bool_)}, r"action_masks of shape \(\d+, 3\)"),
    (lambda d: {"action_masks": _forbid(d, step=4)},
     r"the action \d recorded at step 4 \(episode 0\) is illegal under its action mask"),
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


def test_a_given_dataset_wins_and_anything_else_is_refused() -> None:
    dataset = record("CartPole-v1", cartpole_expert, 1)
    assert resolve_dataset(TrainConfig(algo="bc"), dataset) == (dataset, "the dataset given")
    with pytest.raises(APIUsageError, match=r"dataset= must be a shoal\.datasets\.OfflineDataset, got dict"):
        resolve_dataset(TrainConfig(algo="bc"), {"observations": []})  # type: ignore[arg-type]
    with pytest.raises(APIUsageError, match="is read by the offline algorithms"):
        TrainConfig(algo="sac", dataset="data/x").validate()
