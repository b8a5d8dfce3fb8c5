"""The dataset of an offline run: where it comes from, whether it fits the env, and its fingerprint.

A dataset is given as an :class:`~shoal.datasets.OfflineDataset` (``train(config, dataset=...)``) or by path
(``TrainConfig.dataset``, read by :func:`shoal.datasets.load_dataset`). Before any gradient step it is checked
against the env the policy will play (:func:`check_dataset`); a checkpoint records its fingerprint
(:func:`dataset_fingerprint`), so a run is never resumed on other data.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from shoal.datasets import OfflineDataset, check_dataset_matches, load_dataset
from shoal.emulation.actions import ActionLayout
from shoal.emulation.base import action_mask_width
from shoal.errors import APIUsageError, DatasetError
from shoal.train.config import TrainConfig

__all__ = ["check_dataset", "dataset_fingerprint", "resolve_dataset"]


def resolve_dataset(config: TrainConfig, dataset: OfflineDataset | None) -> tuple[OfflineDataset, str]:
    """``(dataset, source)``: the one given, else the file ``config.dataset`` read by
    ``shoal.datasets.load_dataset``; ``source`` names it in messages.

    Raises:
        APIUsageError: no dataset at all, or something other than an :class:`OfflineDataset`.
        DatasetError: the file cannot be read (see ``load_dataset``).
    """
    if dataset is not None:
        if not isinstance(dataset, OfflineDataset):
            raise APIUsageError(f"dataset= must be a shoal.datasets.OfflineDataset, got {type(dataset).__name__}")
        return dataset, "the dataset given" if config.dataset is None else f"the dataset given (not {config.dataset})"
    if config.dataset is None:
        raise APIUsageError(f"algo={config.algo!r} learns from a recorded dataset: give --dataset PATH (from Python: "
                            "TrainConfig(dataset=PATH), or train(config, dataset=OfflineDataset))")
    return load_dataset(config.dataset), config.dataset


def check_dataset(dataset: OfflineDataset, env: Any, source: str, env_name: str = "the env") -> None:
    """Refuse ``dataset`` unless it can train a policy for ``env`` (a shoal vector env or emulator with
    ``obs_layout``, ``action_layout`` and ``agents_per_env``).

    The spaces are :func:`~shoal.datasets.check_dataset_matches`'s to compare; on top of them a learner needs the
    episodes in slots the env has, action masks of the env's width, every discrete entry of the recorded actions in
    range and legal under its mask (Discrete, MultiDiscrete, a hybrid action's discrete part), and finite rewards
    and continuous actions. ``source`` and ``env_name`` name the dataset and the env in messages.

    Raises:
        DatasetError: naming what does not fit, and where.
    """
    check_dataset_matches(dataset, env.obs_layout, env.action_layout, env=env_name)
    slots = int(getattr(env, "agents_per_env", 1))
    if int(dataset.agents.max()) >= slots or int(dataset.agents.min()) < 0:
        raise DatasetError(f"{source} has episodes played in slots {sorted(set(dataset.agents.tolist()))}, but "
                           f"{env_name} has {slots} slot(s) per env; train on the env it was recorded on (with its "
                           "max_agents)")
    masks = dataset.action_masks
    if masks is not None:
        width = action_mask_width(env.action_layout) if env.action_layout.kind != "continuous" else 0
        if masks.ndim != 2 or masks.shape[1] != width:
            raise DatasetError(f"{source} has action_masks of shape {masks.shape}; the actions of {env_name} need "
                               f"[{len(masks)}, {width}] (or none)")
    if env.action_layout.kind != "continuous":
        _check_legal(dataset, env.action_layout, source)
    if not np.isfinite(dataset.rewards).all():
        step = int(np.flatnonzero(~np.isfinite(dataset.rewards))[0])
        raise DatasetError(f"{source}: the reward at step {step} is {dataset.rewards[step]}; offline learning needs "
                           "finite rewards")
    if dataset.actions.dtype.kind == "f" and not np.isfinite(dataset.actions).all():
        step = int(np.flatnonzero(~np.isfinite(dataset.actions).reshape(len(dataset.actions), -1).all(-1))[0])
        raise DatasetError(f"{source}: the action at step {step} is not finite ({dataset.actions[step]})")


def _check_legal(dataset: OfflineDataset, layout: ActionLayout, source: str) -> None:
    """Every discrete entry of every recorded action (Discrete, each MultiDiscrete entry, a hybrid action's
    discrete part) is a whole number in range and legal under the step's action mask, if any (an illegal one has
    probability 0: its log-likelihood would be -inf and the loss NaN)."""
    masks = dataset.action_masks
    n = len(dataset.actions)
    if layout.kind == "discrete":
        nvec, choices = [int(layout.flat_space.n)], dataset.actions.reshape(n, 1)
    else:
        nvec = [int(k) for k in layout.nvec]
        choices = dataset.actions.reshape(n, -1)[:, :len(nvec)]
    offset = 0
    for entry, size in enumerate(nvec):
        values = choices[:, entry]
        whole = np.isfinite(values) & (values == np.floor(values)) & (values >= 0) & (values < size)
        index = np.where(whole, values, 0).astype(np.int64)
        legal = whole if masks is None else whole & masks[dataset.obs_index, offset + index]
        if not legal.all():
            step = int(np.flatnonzero(~legal)[0])
            episode = int(dataset.episode_of_step[step])
            where = f"step {step} (episode {episode}, its step {step - int(dataset.episode_offsets[episode])})"
            what = ("the action" if layout.kind == "discrete" else f"entry {entry} of the action")
            reason = ("is illegal under its action mask" if whole[step]
                      else f"is not one of its {size} choices (0 .. {size - 1})")
            value = int(values[step]) if whole[step] else values[step].item()
            raise DatasetError(f"{source}: {what} {value!r} recorded at {where} {reason}; the dataset is "
                               "inconsistent, record it again")
        offset += size


def dataset_fingerprint(dataset: OfflineDataset) -> str:
    """A SHA-256 (hex) of every recorded array (the slots' agents and agent types included) and both layouts: equal
    for the same data, whatever its file."""
    digest = hashlib.sha256()
    digest.update(repr((dataset.obs_layout, dataset.action_layout.flat_space)).encode())
    arrays = [dataset.observations, dataset.actions, dataset.rewards, dataset.terminations, dataset.truncations,
              dataset.episode_offsets, dataset.agents, dataset.agent_types]
    if dataset.action_masks is not None:
        arrays.append(dataset.action_masks)
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.view(np.uint8).reshape(-1).data if array.size else b"")
    return digest.hexdigest()
