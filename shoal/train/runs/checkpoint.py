"""Checkpoints: written atomically (write to a temporary file, fsync, rename), validated on load.

A checkpoint is one ``torch.save`` file ``run_dir/checkpoints/update_000123.pt`` holding a dict:

* ``format``: :data:`FORMAT`; ``shoal_version``;
* ``config``: the :class:`~shoal.train.config.TrainConfig` as a dict;
* ``env_signature``: what the policy's shape depends on (flat observation and action spaces, slots per env);
* ``policy_config`` and ``model`` (the policy's ``state_dict``), ``optimizer``;
* ``global_step``, ``update``;
* ``rng``: torch, numpy and Python RNG states, and the trainer's shuffling generator;
* ``trainer``: what the rollout carries between updates (pending transitions, LSTM states, the last env
  result, episode statistics);
* ``env_state``: a snapshot of the envs for exact resume (serial backend, picklable envs), or None.

A crash while writing leaves at most a stray ``*.tmp`` file: the previous checkpoint is never touched. Loading
executes pickle (numpy arrays, env snapshots): load only checkpoints you trust.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from shoal.errors import APIUsageError, CheckpointError

if TYPE_CHECKING:
    from shoal.vector import VecEnv

__all__ = [
    "FORMAT",
    "checkpoint_path",
    "env_signature",
    "find_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "restore_env_state",
    "save_checkpoint",
    "snapshot_env_state",
]

log = logging.getLogger(__name__)

FORMAT = 1
_NAME = re.compile(r"^update_(\d+)\.pt$")
_REQUIRED = ("format", "config", "env_signature", "policy_config", "model", "global_step", "update")


def checkpoint_path(run_dir: str | Path, update: int) -> Path:
    """Where the checkpoint of ``update`` lives in ``run_dir``."""
    return Path(run_dir) / "checkpoints" / f"update_{update:06d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints of ``run_dir``, oldest first (temporary files excluded)."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(path: str | Path, payload: dict[str, Any], keep: int | None = None) -> Path:
    """Write ``payload`` to ``path`` atomically; then keep only the ``keep`` newest checkpoints beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    if keep is not None and keep > 0:
        for old in list_checkpoints(path.parent.parent)[:-keep]:
            if old != path:
                old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read and sanity-check a checkpoint file.

    Raises:
        CheckpointError: missing, unreadable, not a shoal checkpoint, or from an incompatible format.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(payload, dict) or any(key not in payload for key in _REQUIRED):
        raise CheckpointError(
            f"{path} is not a shoal training checkpoint (missing keys "
            f"{[k for k in _REQUIRED if not isinstance(payload, dict) or k not in payload]})"
        )
    if payload["format"] != FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {payload['format']}; this shoal reads format {FORMAT}"
        )
    return payload


def find_checkpoint(run_or_checkpoint: str | Path) -> Path:
    """The checkpoint file named, or the newest readable checkpoint of a run directory.

    Raises:
        CheckpointError: nothing found.
    """
    target = Path(run_or_checkpoint)
    if target.is_file():
        return target
    if not target.exists():
        raise CheckpointError(f"{target} does not exist: give a run directory or a checkpoint file")
    candidates = list_checkpoints(target)
    if not candidates:
        raise CheckpointError(
            f"no checkpoints in {target / 'checkpoints'}; train with --run-dir {target} first"
        )
    return candidates[-1]


def env_signature(vecenv: Any) -> dict[str, Any]:
    """What a policy's shape depends on: flat observation layout, action space, slots per env."""
    return {
        "obs_layout": repr(vecenv.obs_layout),
        "obs_flat": [str(vecenv.obs_layout.flat_dtype), int(vecenv.obs_layout.flat_size)],
        "action_space": repr(vecenv.single_action_space),
        "agents_per_env": int(vecenv.agents_per_env),
    }


def check_signature(saved: dict[str, Any], current: dict[str, Any], source: str, env_name: str) -> None:
    """Raise :class:`CheckpointError` describing the first difference between two env signatures."""
    labels = {
        "obs_layout": "observation layout",
        "obs_flat": "flat observation (dtype, size)",
        "action_space": "flat action space",
        "agents_per_env": "agents per env",
    }
    for key, label in labels.items():
        if saved.get(key) != current.get(key):
            raise CheckpointError(
                f"{source} was trained on another env: its {label} is {saved.get(key)} but {env_name!r} has "
                f"{current.get(key)}. Use a checkpoint of this env, or a new run directory."
            )


# ------------------------------------------------------------------------------------------------------------
# --
# Env snapshots (serial backend): exact resume needs the envs exactly where they were.
# ------------------------------------------------------------------------------------------------------------
# --


# Env snapshots written before the vector envs had get_state() refer to these two by name; keep them so that
# older checkpoints still load.
def _new_object(cls: type) -> Any:
    return cls.__new__(cls)


def _set_dict(obj: Any, state: dict[str, Any]) -> None:
    obj.__dict__.update(state)


#: Prefix of env snapshots. Snapshots pickle emulator internals, so they are only read back by the shoal that
#: wrote them: change the tag whenever emulator or vector env attributes change.
ENV_STATE_TAG = b"shoal-env-state-2\n"


def snapshot_env_state(vecenv: VecEnv) -> bytes | None:
    """Pickle :meth:`VecEnv.get_state() <shoal.vector.VecEnv.get_state>` of ``vecenv``; None when impossible.

    Only the serial backend with every env in one batch and picklable envs can be snapshotted (other backends
    keep their envs in other processes; envs holding e.g. pygame surfaces cannot be pickled); a vector env that
    is closed or has a batch in flight gives None too.
    """
    try:
        state = vecenv.get_state()
    except APIUsageError as exc:  # closed, or not between batches: resume restarts the envs instead
        log.debug("env snapshot skipped: %s", exc)
        return None
    if state is None:
        log.debug("env snapshot skipped: backend %r or unpicklable envs", vecenv.backend)
        return None
    return ENV_STATE_TAG + pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


def restore_env_state(vecenv: VecEnv, blob: bytes) -> bool:
    """Put the envs of :func:`snapshot_env_state` back into a freshly reset vector env (see
    :meth:`VecEnv.set_state() <shoal.vector.VecEnv.set_state>`).

    The vector env must have just returned its first batch (``async_reset`` + ``recv``). True on success; False
    when this vector env cannot take the snapshot (another backend, number of envs or buffer shapes), when an
    older shoal wrote it, or when it cannot be unpickled here (the caller then restarts the envs).
    """
    if not blob.startswith(ENV_STATE_TAG):
        log.warning("the env snapshot was written by another version of shoal; the envs restart instead")
        return False
    try:
        state = pickle.loads(blob[len(ENV_STATE_TAG):])
    except Exception as exc:  # e.g. an env class that changed since: restart the envs instead
        log.warning("cannot read the env snapshot (%s: %s); the envs restart instead", type(exc).__name__, exc)
        return False
    return vecenv.set_state(state)
