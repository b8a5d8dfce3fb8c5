"""Offline datasets on disk in Minari's format (HDF5 storage): :func:`save_dataset` and :func:`load_dataset`.

A dataset directory ``PATH`` holds ``PATH/data/metadata.json`` and ``PATH/data/main_data.hdf5``, as a dataset under
Minari's root does, so ``minari.MinariDataset(PATH / "data")`` reads it (and copying ``PATH`` into Minari's root
under a dataset id makes it a local Minari dataset).

What is stored where
    * episode ``observations``: the per-slot observation space itself, rows unflattened through the layout
      (nested Dict/Tuple leaves in their own dtypes, Text as strings), ``T_i + 1`` per episode;
    * ``actions``: the native action space (:meth:`ActionLayout.to_native` of each flat action);
    * ``rewards``, ``terminations``, ``truncations``: as recorded;
    * ``infos/action_mask``: the legal-action masks, ``bool[T_i + 1, mask_width]``, when the dataset has them;
    * each episode's attributes ``agent`` (its slot) and ``agent_type``;
    * the dataset metadata's ``"shoal"`` entry: the observation and action spaces (Minari's space serialization,
      Text charsets in their own order, so the flat rows come back byte for byte), the mask width and the
      dataset's own metadata (env id, source, steps, seed...).

:func:`load_dataset` reads these, and any other Minari dataset (e.g. one written by ``minari.DataCollector``): its
observations are flattened through ``compile_layout(observation_space)`` (an ``"action_mask"`` entry of a Dict
observation space becomes the action masks, as the emulators do), its actions through
:meth:`ActionLayout.from_native`.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from gymnasium import spaces

from shoal.datasets.episodes import OfflineDataset
from shoal.datasets.matching import stored_space
from shoal.emulation.actions import ActionLayout
from shoal.emulation.base import ACTION_MASK_KEY, action_mask_width, split_action_mask
from shoal.emulation.flatten import decode_leaf, flatten_batch, unflatten
from shoal.emulation.layout import Layout, compile_layout, format_path, leaf_value
from shoal.emulation.layout import Path as LeafPath
from shoal.errors import APIUsageError, DatasetError, ShoalError

__all__ = ["check_output_path", "load_dataset", "read_metadata", "save_dataset"]

log = logging.getLogger(__name__)

#: Version of the ``"shoal"`` metadata entry.
FORMAT_VERSION = 1
_DATA = "data"
_METADATA = "metadata.json"
_MAIN = "main_data.hdf5"


def _minari() -> Any:
    try:
        import minari
        from minari.dataset.minari_storage import MinariStorage
    except ImportError as exc:
        raise APIUsageError(f"offline datasets need Minari with HDF5 storage ({exc}); install them with "
                            "pip install \"shoal[offline]\"") from None
    return minari, MinariStorage


# --------------------------------------------------------------------------------------------------------------
# Spaces as JSON
# --------------------------------------------------------------------------------------------------------------


def space_to_json(space: spaces.Space) -> dict[str, Any]:
    """Minari's serialization of ``space`` as a dict, with each Text charset in the space's own character order
    (the order its flat codes follow; Minari's own string is sorted)."""
    from minari.serialization import serialize_space

    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "subspaces": {key: space_to_json(sub) for key, sub in space.spaces.items()}}
    if isinstance(space, spaces.Tuple):
        return {"type": "Tuple", "subspaces": [space_to_json(sub) for sub in space.spaces]}
    out = serialize_space(space, to_string=False)
    if isinstance(space, spaces.Text):
        out["charset"] = "".join(space.character_list)
    return out


def space_from_json(data: dict[str, Any]) -> spaces.Space:
    """Inverse of :func:`space_to_json`."""
    from minari.serialization import deserialize_space

    return deserialize_space(data)


# --------------------------------------------------------------------------------------------------------------
# Rows <-> native samples
# --------------------------------------------------------------------------------------------------------------


def _tree(space: spaces.Space, leaf: Callable[[LeafPath], Any], path: LeafPath = ()) -> Any:
    """The nesting of ``space`` with ``leaf(path)`` at each leaf."""
    if isinstance(space, spaces.Dict):
        return {key: _tree(sub, leaf, (*path, key)) for key, sub in space.spaces.items()}
    if isinstance(space, spaces.Tuple):
        return tuple(_tree(sub, leaf, (*path, i)) for i, sub in enumerate(space.spaces))
    return leaf(path)


def _native_observations(layout: Layout, rows: np.ndarray) -> Any:
    """``[N, flat_size]`` rows as the space's nesting of leaf arrays ``[N, *leaf.shape]`` (Text: ``N`` strings)."""
    views = unflatten(layout, rows)

    def leaf(path: LeafPath) -> Any:
        spec, view = layout.leaf(*path), leaf_value(views, path)
        if spec.kind == "text":
            return [decode_leaf(spec.space, code) for code in view]
        return np.ascontiguousarray(view)

    return _tree(stored_space(layout.space), leaf)


# --------------------------------------------------------------------------------------------------------------
# save
# --------------------------------------------------------------------------------------------------------------


def _dataset_id(path: Path, given: str | None) -> str:
    if given is not None:
        return given
    name = re.sub(r"[^-_\w]+", "-", path.resolve().name).strip("-") or "dataset"
    return name if re.search(r"-v\d+$", name) else f"{name}-v0"


def _env_spec(metadata: dict[str, Any]) -> Any:
    """The Gymnasium spec of the dataset's env when it is a registered id made without extra keywords or wrappers
    (so ``MinariDataset.recover_environment`` rebuilds it), else None (a bare spec would name another env)."""
    env = metadata.get("env")
    if not isinstance(env, str) or metadata.get("env_kwargs") or metadata.get("wrappers"):
        return None
    import gymnasium

    try:
        return gymnasium.spec(env)
    except Exception:  # not a Gymnasium id (a PettingZoo module, a built-in env): no spec to give
        return None


def _check_json(metadata: dict[str, Any]) -> None:
    for key, value in metadata.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise APIUsageError(f"dataset metadata[{key!r}] = {value!r} cannot be stored as JSON ({exc}); store "
                                "numbers, strings, lists and dicts") from None


def check_output_path(path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """``path`` as a :class:`~pathlib.Path` if :func:`save_dataset` may write a dataset there (check it before a
    long recording).

    Raises:
        APIUsageError: ``path`` exists and is not a dataset directory, or is one and ``overwrite`` is off.
    """
    path = Path(path)
    if path.exists():
        if not (path / _DATA / _METADATA).is_file():
            raise APIUsageError(f"{path} exists and is not a dataset directory; choose a new path for the dataset")
        if not overwrite:
            raise APIUsageError(f"a dataset already exists at {path}; choose another path or pass overwrite=True "
                                "(--overwrite) to replace it")
    return path


def save_dataset(dataset: OfflineDataset, path: str | os.PathLike[str], *, dataset_id: str | None = None,
                 overwrite: bool = False) -> Path:
    """Write ``dataset`` as a Minari dataset directory at ``path`` (see the module docstring).

    The directory is written beside ``path`` first and moved into place once complete, so an interrupted save
    leaves no half-written dataset at ``path``.

    Args:
        dataset: the dataset.
        path: the dataset directory to create (its ``data/`` subdirectory is what Minari reads).
        dataset_id: the id recorded in Minari's metadata (default: the directory's name, with ``-v0`` appended
            unless it ends in a version).
        overwrite: replace a dataset already at ``path`` (never anything that is not a dataset directory).

    Returns:
        ``path``.

    Raises:
        APIUsageError: ``path`` exists (and ``overwrite`` is off, or it is not a dataset directory), metadata that
            JSON cannot hold, Minari not installed.
    """
    _, storage_cls = _minari()
    from minari import __version__ as minari_version
    from minari.data_collector import EpisodeBuffer

    path = check_output_path(path, overwrite)
    _check_json(dataset.metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    # absolute: Minari sizes a dataset by joining its data path with paths it globbed below it
    staging = path.absolute().with_name(f".{path.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        obs_space = stored_space(dataset.obs_layout.space)
        action_space = dataset.action_layout.space
        extra = {"jpeg_encoding": False} if "jpeg_encoding" in inspect.signature(storage_cls.new).parameters else {}
        storage = storage_cls.new(staging / _DATA, observation_space=obs_space, action_space=action_space,
                                  env_spec=_env_spec(dataset.metadata), data_format="hdf5", **extra)
        shoal_facts = {
            "format_version": FORMAT_VERSION,
            "observation_space": space_to_json(obs_space),
            "action_space": space_to_json(action_space),
            "mask_width": None if dataset.action_masks is None else int(dataset.action_masks.shape[1]),
            # where a loaded dataset was read from is not a fact of the copy
            "metadata": {key: value for key, value in dataset.metadata.items() if key not in ("path", "dataset_id")},
        }
        storage.update_metadata({"dataset_id": _dataset_id(path, dataset_id), "minari_version": minari_version,
                                 "shoal": shoal_facts})
        storage.update_episodes(_episode_buffers(dataset, EpisodeBuffer))
        storage.update_episode_metadata(
            {"agent": int(agent), "agent_type": int(agent_type)}
            for agent, agent_type in zip(dataset.agents, dataset.agent_types, strict=True))
        if path.exists():
            shutil.rmtree(path)
        staging.rename(path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def _episode_buffers(dataset: OfflineDataset, buffer_cls: type) -> Iterator[Any]:
    """One Minari episode buffer per episode, built as the storage writes them (one episode in memory at once)."""
    obs_offsets = dataset.obs_offsets
    for i in range(dataset.num_episodes):
        steps = slice(int(dataset.episode_offsets[i]), int(dataset.episode_offsets[i + 1]))
        rows = slice(int(obs_offsets[i]), int(obs_offsets[i + 1]))
        infos = None if dataset.action_masks is None else {ACTION_MASK_KEY: np.array(dataset.action_masks[rows])}
        yield buffer_cls(
            observations=_native_observations(dataset.obs_layout, dataset.observations[rows]),
            actions=dataset.action_layout.to_native_batch(dataset.actions[steps]),
            rewards=np.array(dataset.rewards[steps], np.float32),
            terminations=np.array(dataset.terminations[steps], np.bool_),
            truncations=np.array(dataset.truncations[steps], np.bool_),
            infos=infos,
        )


# --------------------------------------------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------------------------------------------


def _data_path(target: str | os.PathLike[str]) -> Path:
    """The directory holding ``metadata.json`` for a dataset directory, its ``data/`` directory, or a local
    Minari dataset id."""
    path = Path(target)
    for candidate in (path / _DATA, path):
        if (candidate / _METADATA).is_file():
            return candidate
    if path.exists():
        raise DatasetError(f"{path} holds no dataset: neither {path / _DATA / _METADATA} nor {path / _METADATA} "
                           "exists")
    from minari.storage.datasets_root_dir import get_dataset_path

    local = get_dataset_path(str(target)) / _DATA
    if (local / _METADATA).is_file():
        return local
    raise DatasetError(f"{str(target)!r} is neither a dataset directory nor a local Minari dataset id (looked in "
                       f"{local.parent}); record one with shoal record, or fetch a Minari dataset first with "
                       "minari download ID")


def _raw_metadata(data_path: Path) -> dict[str, Any]:
    """The parsed ``metadata.json`` in ``data_path`` (a JSON object)."""
    _, storage_cls = _minari()
    with _reading(data_path / _METADATA):
        raw = storage_cls.read_raw_metadata(data_path)
        if not isinstance(raw, dict):
            raise ValueError(f"the metadata is a {type(raw).__name__}, not a JSON object")
    return raw


def read_metadata(target: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``metadata`` of the dataset :func:`save_dataset` wrote at ``target`` (env, source, run_dir, steps...),
    read from its ``metadata.json`` alone (the data file is not opened); ``{}`` for a dataset shoal did not write.

    Raises:
        DatasetError: no dataset there; a missing or corrupt ``metadata.json`` (naming it).
    """
    data_path = _data_path(target)
    raw = _raw_metadata(data_path)
    with _reading(data_path / _METADATA):
        facts = raw.get("shoal") or {}
        metadata = facts.get("metadata") or {} if isinstance(facts, dict) else None
        if not isinstance(metadata, dict):
            raise ValueError("its 'shoal' entry or the metadata in it is not a JSON object")
    return dict(metadata)


def load_dataset(target: str | os.PathLike[str]) -> OfflineDataset:
    """Read a dataset written by :func:`save_dataset`, or any Minari dataset, into an :class:`OfflineDataset`.

    Args:
        target: a dataset directory (or its ``data/`` directory), or the id of a dataset under Minari's root
            (``MINARI_DATASETS_PATH``, default ``~/.minari/datasets``; nothing is downloaded).

    Raises:
        DatasetError: no dataset there; a missing, truncated or corrupt file (naming it); spaces shoal cannot
            flatten; action masks that do not fit the action space.
    """
    data_path = _data_path(target)
    raw = _raw_metadata(data_path)
    missing = [key for key in ("observation_space", "action_space") if not isinstance(raw.get(key), str)]
    if missing:  # Minari would build the env its env_spec names to find them: code the file chose
        raise DatasetError(f"{data_path / _METADATA} does not state its {' and '.join(missing)} (Minari would make "
                           "the env its env_spec names to find out, and shoal does not run code a file names); "
                           "write the spaces into the dataset's metadata")
    data_format = raw.get("data_format", "hdf5")
    if data_format != "hdf5":
        try:
            from minari.dataset._storages import get_minari_storage

            get_minari_storage(data_format)
        except (ImportError, KeyError) as exc:
            raise DatasetError(f"{data_path / _METADATA}: this dataset is stored as {data_format!r}, which this "
                               f"Minari installation cannot read ({type(exc).__name__}: {exc}); install the package "
                               "its storage needs (e.g. pip install \"minari[arrow]\")") from None
    with _reading(data_path / _METADATA):  # the spaces are the metadata's: a bad one is that file's fault
        spaces_read = _read_spaces(raw)
    with _reading(data_path / _MAIN if data_format == "hdf5" else data_path):
        return _load(data_path, raw, spaces_read)


_UNREADABLE = (OSError, KeyError, ValueError, TypeError, AssertionError, IndexError, AttributeError)


@contextlib.contextmanager
def _reading(file: Path) -> Iterator[None]:
    """Turn what h5py, json and Minari raise on a broken ``file`` into a :class:`DatasetError` naming it."""
    try:
        yield
    except ShoalError:
        raise
    except _UNREADABLE as exc:
        if not file.exists():
            raise DatasetError(f"{file} is missing: the dataset directory is incomplete; record or download the "
                               "dataset again") from exc
        raise DatasetError(f"{file}: cannot read this dataset ({type(exc).__name__}: {exc}); the file is truncated "
                           "or corrupt: record or download the dataset again") from exc


class _Spaces(NamedTuple):
    """The spaces a dataset's metadata.json states: Minari's (as stored) and the ones shoal flattens."""

    stored_obs: spaces.Space
    stored_action: spaces.Space
    obs: spaces.Space
    action: spaces.Space
    mask_in_obs: bool
    metadata: dict[str, Any]


def _read_spaces(raw: dict[str, Any]) -> _Spaces:
    """Parse the spaces (and shoal's facts) of a dataset's metadata ``raw``, without opening its data file."""
    from minari.serialization import deserialize_space

    stored_obs = deserialize_space(raw["observation_space"])
    stored_action = deserialize_space(raw["action_space"])
    facts = raw.get("shoal")
    if facts is None:
        obs_space, mask_in_obs = split_action_mask(stored_obs)
        return _Spaces(stored_obs, stored_action, obs_space, stored_action, mask_in_obs, {"source": "minari"})
    if not isinstance(facts, dict):
        raise ValueError(f"its 'shoal' entry is a {type(facts).__name__}, not a JSON object")
    metadata = facts.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ValueError(f"its 'shoal' metadata is a {type(metadata).__name__}, not a JSON object")
    return _Spaces(stored_obs, stored_action, space_from_json(facts["observation_space"]),
                   space_from_json(facts["action_space"]), False, dict(metadata))


def _load(data_path: Path, raw: dict[str, Any], read: _Spaces) -> OfflineDataset:
    from minari.dataset._storages import get_minari_storage

    # built from the spaces parsed above (MinariStorage.read would parse them again, here blamed on the data file)
    storage = get_minari_storage(raw.get("data_format", "hdf5"))(
        data_path, read.stored_obs, read.stored_action, jpeg_encoding=bool(raw.get("jpeg_encoding", True)))
    obs_space, action_space, mask_in_obs, metadata = read.obs, read.action, read.mask_in_obs, read.metadata
    if raw.get("shoal") is None and raw.get("env_spec"):  # a foreign dataset: keep what it says of its env
        metadata["env_spec"] = raw["env_spec"]
    metadata.setdefault("dataset_id", raw.get("dataset_id"))
    metadata["path"] = str(data_path.parent if data_path.name == _DATA else data_path)
    try:
        obs_layout = compile_layout(obs_space)
        action_layout = ActionLayout(action_space)
    except ShoalError as exc:
        raise DatasetError(f"{data_path / _METADATA}: shoal cannot hold this dataset's spaces: {exc}") from None
    width = action_mask_width(action_layout) if action_layout.kind != "continuous" else 0
    total = int(raw.get("total_episodes", 0))
    attributes = list(storage.get_episode_metadata(range(total)))
    parts: dict[str, list[np.ndarray]] = {name: [] for name in ("obs", "actions", "rewards", "terms", "truncs",
                                                                "masks", "lengths")}
    agents, agent_types = [], []
    any_mask, empty = False, 0
    for index, episode in enumerate(storage.get_episodes(range(total))):
        steps = len(episode["rewards"])
        if steps == 0:
            empty += 1
            continue
        observations = episode["observations"]
        mask = None
        if mask_in_obs:
            observations = {key: value for key, value in observations.items() if key != ACTION_MASK_KEY}
            mask = episode["observations"][ACTION_MASK_KEY]
        elif episode.get("infos") and ACTION_MASK_KEY in episode["infos"]:
            mask = episode["infos"][ACTION_MASK_KEY]
        rows = flatten_batch(obs_layout, observations)
        if len(rows) != steps + 1:
            raise DatasetError(f"{data_path / _MAIN}: episode {index} has {len(rows)} observations for {steps} "
                               "steps; a Minari episode holds one more observation than steps")
        parts["obs"].append(rows)
        actions = action_layout.from_native_batch(episode["actions"])
        if len(actions) != steps:
            raise DatasetError(f"{data_path / _MAIN}: episode {index} has {len(actions)} actions for {steps} rewards")
        parts["actions"].append(actions)
        parts["rewards"].append(np.asarray(episode["rewards"], np.float32).reshape(steps))
        parts["terms"].append(np.asarray(episode["terminations"], np.bool_).reshape(steps))
        parts["truncs"].append(np.asarray(episode["truncations"], np.bool_).reshape(steps))
        parts["lengths"].append(np.array([steps], np.int64))
        parts["masks"].append(_masks(mask, steps + 1, width, data_path, index))
        any_mask = any_mask or mask is not None
        agents.append(int(attributes[index].get("agent", 0)))
        agent_types.append(int(attributes[index].get("agent_type", 0)))
    if empty:
        log.warning("%s: %d episode(s) without a step hold no transition and were left out", data_path, empty)
    if not parts["lengths"]:
        raise DatasetError(f"{data_path / _MAIN}: the dataset holds no episode with a step")
    masks = np.concatenate(parts["masks"]) if width and any_mask else None
    return OfflineDataset(
        observations=np.concatenate(parts["obs"]),
        actions=np.concatenate(parts["actions"]),
        rewards=np.concatenate(parts["rewards"]),
        terminations=np.concatenate(parts["terms"]),
        truncations=np.concatenate(parts["truncs"]),
        episode_offsets=np.concatenate([[0], np.cumsum(np.concatenate(parts["lengths"]))]).astype(np.int64),
        obs_layout=obs_layout,
        action_layout=action_layout,
        action_masks=masks,
        agents=np.array(agents, np.int32),
        agent_types=np.array(agent_types, np.int32),
        metadata=metadata,
    )


def _masks(mask: Any, rows: int, width: int, data_path: Path, episode: int) -> np.ndarray:
    """``bool[rows, width]`` legal actions of one episode (all legal when it stores none)."""
    if mask is None or not width:
        return np.ones((rows, width), np.bool_)
    mask = np.asarray(mask)
    if mask.shape[0] != rows or mask[0].size != width:
        raise DatasetError(f"{data_path / _MAIN}: episode {episode} stores {ACTION_MASK_KEY!r} of shape "
                           f"{mask.shape}; the action space needs {rows} masks of {width} entries "
                           f"({format_path((ACTION_MASK_KEY,))} per observation)")
    return mask.reshape(rows, width).astype(np.bool_)
