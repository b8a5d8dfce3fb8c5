"""Checkpoints: written atomically (write to a temporary file, fsync, rename), validated on load.

A checkpoint is one ``torch.save`` file ``run_dir/checkpoints/update_000123.pt`` holding a dict:

* ``format``: :data:`FORMAT`; ``shoal_version``;
* ``config``: the :class:`~shoal.train.config.TrainConfig` as a dict;
* ``env_signature``: what the policy's shape depends on (flat observation and action spaces, slots per env);
* ``policy_config`` and ``model`` (the policy's ``state_dict``), ``optimizer``;
* ``global_step``, ``update``;
* ``rng``: torch, numpy and Python RNG states, and the trainer's shuffling generator;
* ``trainer``: what the rollout carries between updates (pending transitions, LSTM states, the last env
  result's arrays, episode statistics; never env ``infos``);
* ``env_state``: a signed snapshot of the envs for exact resume (serial backend, picklable envs), or None.

A crash while writing leaves at most a stray ``.update_*.pt.<pid>.tmp`` file: the previous checkpoint is never
touched, and :func:`remove_stale_temporaries` deletes such leftovers (on the next save, ``--resume`` and
``--overwrite``).

Loading never runs code from the file
-------------------------------------
Everything but the env snapshot is plain data: tensors, numbers, strings, lists, tuples and dicts. numpy arrays
(RNG states, the rollout carry-over) are stored as byte tensors with their dtype and shape, so
:func:`load_checkpoint` reads the file with ``torch.load(weights_only=True)``, whose unpickler builds those types
only and refuses any other object (an object whose ``__reduce__`` would call ``exec`` is refused before it is
built). The zip archive's CRCs are checked first, so a truncated or corrupted file is reported as such.

The env snapshot is different: continuing episodes bit for bit needs the envs themselves, which only pickle can
capture, and unpickling a foreign file can run any code. It is therefore stored as bytes with an HMAC-SHA256
signature made with a secret key of the user who wrote it (:func:`checkpoint_key_path`: ``$SHOAL_HOME/
checkpoint.key``, else ``~/.cache/shoal/checkpoint.key``; 32 random bytes created on first use, mode 0600).
:func:`restore_env_state` unpickles a snapshot only when its signature verifies under the reader's own key; any
other snapshot (another machine or user, an edited file, another shoal or Python version) is not unpickled:
resume logs a warning and restarts the envs from a fresh reset (a valid, but not bit-identical, continuation).
To resume exactly on another machine, copy the key file there (or point ``SHOAL_HOME`` at a shared folder).
Evaluation never reads the snapshot.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import pickle
import re
import secrets
import sys
import time
import zipfile
from collections import OrderedDict, deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cloudpickle
import numpy as np
import torch

from shoal.errors import APIUsageError, CheckpointError

if TYPE_CHECKING:
    from shoal.vector import VecEnv

__all__ = [
    "FORMAT",
    "checkpoint_key_path",
    "checkpoint_path",
    "env_signature",
    "find_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "remove_stale_temporaries",
    "restore_env_state",
    "save_checkpoint",
    "snapshot_env_state",
]

log = logging.getLogger(__name__)

#: Format 2: plain data only (numpy arrays as byte tensors), signed env snapshots. Format 1 pickled numpy objects.
FORMAT = 2
_NAME = re.compile(r"^update_(\d+)\.pt$")
_TMP = re.compile(r"^\..+\.pt\.(\d+)\.tmp$")  # what save_checkpoint writes first: .NAME.pt.<pid>.tmp
_REQUIRED = ("format", "config", "env_signature", "policy_config", "model", "global_step", "update")
#: A temporary file this old is a leftover even if a process with its pid runs (pids are reused).
STALE_AFTER = 3600.0


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


# ------------------------------------------------------------------------------------------------------------
# Plain data: what torch.load(weights_only=True) can read back
# ------------------------------------------------------------------------------------------------------------

_ARRAY = "__shoal_ndarray__"
_BYTES = "__shoal_bytes__"
_SCALARS = (str, int, float, bool, type(None))
_TORCH = (torch.Tensor, torch.Size, torch.dtype, torch.device)


def _byte_tensor(data: bytes | np.ndarray) -> torch.Tensor:
    raw = np.frombuffer(data, np.uint8) if isinstance(data, bytes) else data.reshape(-1).view(np.uint8)
    return torch.from_numpy(raw.copy())


def _to_plain(obj: Any, where: str) -> Any:
    """``obj`` with numpy arrays, numpy scalars and bytes replaced by tagged dicts of byte tensors."""
    if isinstance(obj, np.ndarray | np.generic):  # first: np.float64 is a float, but pickles as a numpy scalar
        array = np.asarray(obj)  # (np.ascontiguousarray would make a numpy scalar 1-d)
        if not array.flags.c_contiguous:
            array = array.copy()
        if array.dtype.hasobject:
            raise CheckpointError(
                f"cannot save checkpoint field {where}: a numpy array of Python objects can only be stored by "
                "pickle; convert it to numbers or strings first"
            )
        dtype = array.dtype.str if array.dtype.fields is None else array.dtype.descr
        return {_ARRAY: dtype, "shape": list(array.shape), "scalar": isinstance(obj, np.generic),
                "data": _byte_tensor(array)}
    if type(obj) in _SCALARS or isinstance(obj, _TORCH):
        return obj
    for kind in (bool, int, float, str):  # e.g. an IntEnum: pickled by its class, which weights_only refuses
        if isinstance(obj, kind):
            return kind(obj)
    if isinstance(obj, bytes | bytearray):
        return {_BYTES: _byte_tensor(bytes(obj))}
    if isinstance(obj, dict):
        out = {
            (k.item() if isinstance(k, np.generic) else k): _to_plain(v, f"{where}[{k!r}]") for k, v in obj.items()
        }
        if not isinstance(obj, OrderedDict):
            return out
        ordered = OrderedDict(out)
        metadata = getattr(obj, "_metadata", None)  # a state_dict's module versions (load_state_dict reads them)
        if metadata is not None:
            ordered._metadata = _to_plain(metadata, f"{where}._metadata")  # type: ignore[attr-defined]
        return ordered
    if isinstance(obj, list | tuple | deque):
        items = [_to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return tuple(items) if isinstance(obj, tuple) else items
    raise CheckpointError(
        f"cannot save checkpoint field {where}: {type(obj).__module__}.{type(obj).__qualname__} is not plain data "
        "(tensors, numpy arrays, numbers, strings, lists, tuples, dicts); checkpoints hold plain data only, so "
        "that loading one never runs code from the file"
    )


def _from_plain(obj: Any) -> Any:
    """Undo :func:`_to_plain`."""
    if isinstance(obj, dict):
        if _ARRAY in obj:
            dtype = np.dtype(obj[_ARRAY] if isinstance(obj[_ARRAY], str) else [tuple(f) for f in obj[_ARRAY]])
            if dtype.hasobject:  # never written by save_checkpoint: bytes must not become object references
                raise ValueError(f"an array of dtype {dtype} (Python objects)")
            array = obj["data"].cpu().numpy().view(dtype).reshape(obj["shape"])
            return array[()] if obj.get("scalar") else array
        if _BYTES in obj:
            return obj[_BYTES].cpu().numpy().tobytes()
        out = {k: _from_plain(v) for k, v in obj.items()}
        if not isinstance(obj, OrderedDict):
            return out
        ordered = OrderedDict(out)
        if getattr(obj, "_metadata", None) is not None:
            ordered._metadata = obj._metadata  # type: ignore[attr-defined]
        return ordered
    if isinstance(obj, list):
        return [_from_plain(v) for v in obj]
    if isinstance(obj, tuple) and not isinstance(obj, torch.Size):
        return tuple(_from_plain(v) for v in obj)
    return obj


# ------------------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process writes one file at a time and removes its own on failure
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's), or cannot tell: keep it
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete ``.NAME.pt.<pid>.tmp`` files left in ``folder`` by a process killed while writing a checkpoint.

    A file is stale when no process with its pid runs, or when it is older than :data:`STALE_AFTER` seconds
    (pids are reused). ``folder`` may be a run directory (its ``checkpoints/`` and ``league/`` are cleaned).

    Returns:
        the files removed.
    """
    folder = Path(folder)
    folders = [folder, folder / "checkpoints", folder / "league"]
    removed = []
    now = time.time()
    for where in folders:
        if not where.is_dir():
            continue
        for path in where.iterdir():
            m = _TMP.match(path.name)
            if m is None:
                continue
            try:
                old = now - path.stat().st_mtime > STALE_AFTER
            except OSError:
                continue
            if old or not _pid_alive(int(m.group(1))):
                try:
                    path.unlink()
                except OSError as exc:
                    log.warning("cannot remove the stale temporary file %s: %s", path, exc)
                    continue
                removed.append(path)
                log.info("removed %s, left by a checkpoint write that did not finish", path)
    return removed


def save_checkpoint(path: str | Path, payload: dict[str, Any], keep: int | None = None) -> Path:
    """Write ``payload`` to ``path`` atomically; then keep only the ``keep`` newest checkpoints beside it.

    numpy arrays and bytes in ``payload`` are stored as byte tensors (see the module docstring), so the file
    loads with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError: ``payload`` holds something other than plain data (named by its key path).
    """
    path = Path(path)
    plain = _to_plain(payload, "payload")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(plain, f)
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


# ------------------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------------------


def _check_archive(path: Path) -> None:
    """Raise :class:`CheckpointError` when ``path`` is not a complete, uncorrupted torch.save archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # reads every member and checks its CRC
    except zipfile.BadZipFile as exc:
        size = path.stat().st_size
        raise CheckpointError(
            f"cannot read checkpoint {path}: truncated or not a checkpoint ({size} bytes, {exc}); it was "
            "probably cut short by a crash or an incomplete copy"
        ) from exc
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    except Exception as exc:  # a damaged zip directory fails in many ways (names, sizes, methods)
        raise CheckpointError(
            f"cannot read checkpoint {path}: corrupted ({type(exc).__name__}: {exc})"
        ) from exc
    if bad is not None:
        raise CheckpointError(f"cannot read checkpoint {path}: corrupted (checksum mismatch in its member {bad})")


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read and sanity-check a checkpoint file, without running any code from it.

    The file is read with ``torch.load(weights_only=True)`` (see the module docstring); the env snapshot in
    ``env_state`` stays signed bytes until :func:`restore_env_state` verifies it.

    Raises:
        CheckpointError: missing, truncated, corrupted, holding objects other than plain data (e.g. written by
            an older shoal, or crafted to run code), not a shoal checkpoint, or of another format.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    _check_archive(path)
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = str(exc)
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", detail)
        what = found.group(1) if found else ""
        if what.startswith("numpy."):
            raise CheckpointError(
                f"refused to load {path}: it stores numpy objects through pickle ({what}), as checkpoints of "
                f"format 1 (shoal before checkpoint format {FORMAT}) did, and unpickling them could run code "
                "from the file; train a new run, or re-save it with this shoal if you fully trust it"
            ) from None
        raise CheckpointError(
            f"refused to load {path}: it holds an object that is not plain data"
            f"{f' (built by {what!r})' if what else ''}; building it could run code from the file, so shoal does "
            "not unpickle it. Use checkpoints written by shoal only"
        ) from None
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    try:
        payload = _from_plain(raw)
    except Exception as exc:  # a damaged or hand-made array record
        raise CheckpointError(f"cannot read checkpoint {path}: malformed data ({type(exc).__name__}: {exc})") from exc
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


def find_checkpoint(run_or_checkpoint: str | Path, *, validate: bool = True) -> Path:
    """The checkpoint file named, or the newest readable checkpoint of a run directory.

    With ``validate``, each checkpoint of a run directory is read (newest first) until one loads: a checkpoint
    that cannot be read (truncated, corrupted, refused) is skipped with a warning naming it and why.

    Raises:
        CheckpointError: nothing found, or no checkpoint of the run directory is readable (each file is named
            with its cause).
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
    if not validate:
        return candidates[-1]
    failures = []
    for path in reversed(candidates):
        try:
            load_checkpoint(path)
        except CheckpointError as exc:
            failures.append(str(exc))
            continue
        if failures:
            log.warning("skipping %d unreadable checkpoint(s) of %s and using %s instead:\n  %s",
                        len(failures), target, path.name, "\n  ".join(failures))
        return path
    raise CheckpointError(f"no readable checkpoint in {target / 'checkpoints'}:\n  " + "\n  ".join(failures))


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
# Env snapshots (serial backend): exact resume needs the envs exactly where they were.
# ------------------------------------------------------------------------------------------------------------

#: Prefix of env snapshots, followed by the HMAC-SHA256 of tag + pickle and the pickle. Snapshots pickle
#: emulator internals, so they are only read back by the shoal that wrote them: change the tag whenever emulator
#: or vector env attributes change. The tag also names the interpreter (``sys.implementation.cache_tag``, e.g.
#: ``cpython-311``) and cloudpickle's version: closures in a snapshot are pickled as bytecode by cloudpickle
#: (:mod:`shoal.vector.snapshot`), which another Python version may misread or crash on rather than refuse.
ENV_STATE_TAG = f"shoal-env-state-4 {sys.implementation.cache_tag} cloudpickle-{cloudpickle.__version__}\n".encode()
_MAC_SIZE = hashlib.sha256().digest_size
_KEY_SIZE = 32
_keys: dict[Path, bytes | None] = {}


def checkpoint_key_path() -> Path:
    """The signing key of env snapshots: ``$SHOAL_HOME/checkpoint.key``, else
    ``$XDG_CACHE_HOME/shoal/checkpoint.key`` (``~/.cache/shoal/checkpoint.key``)."""
    home = os.environ.get("SHOAL_HOME")
    if home:
        return Path(home).expanduser() / "checkpoint.key"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "shoal" / "checkpoint.key"


def _read_key(path: Path) -> bytes | None:
    try:
        info = path.stat()
        key = path.read_bytes()
    except OSError as exc:
        log.warning("cannot read the checkpoint key %s (%s): env snapshots are not signed or trusted", path, exc)
        return None
    if os.name == "posix" and (info.st_uid != os.getuid() or info.st_mode & 0o077):
        log.warning("ignoring the checkpoint key %s: other users can read or change it, or it is not yours; "
                    "run chmod 600 on it (or delete it to make a new one)", path)
        return None
    if len(key) < _KEY_SIZE:
        log.warning("ignoring the checkpoint key %s: it is %d bytes, expected %d; delete it to make a new one",
                    path, len(key), _KEY_SIZE)
        return None
    return key


def _create_key(path: Path) -> None:
    """Write a new random key to ``path`` unless one appears meanwhile (another process may race us)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, secrets.token_bytes(_KEY_SIZE))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # fails if another process created the key first: then theirs is used
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def _signing_key() -> bytes | None:
    """This user's key (created on first use); None when it cannot be created or is not private."""
    path = checkpoint_key_path()
    if path not in _keys:
        if not path.exists():
            try:
                _create_key(path)
            except OSError as exc:
                log.warning("cannot create the checkpoint key %s (%s): checkpoints will hold no env snapshot, so "
                            "resume restarts the envs; set SHOAL_HOME to a writable folder", path, exc)
                _keys[path] = None
                return None
        _keys[path] = _read_key(path)
    return _keys[path]


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, ENV_STATE_TAG + data, hashlib.sha256).digest()


def snapshot_env_state(vecenv: VecEnv) -> bytes | None:
    """Pickle :meth:`VecEnv.get_state() <shoal.vector.VecEnv.get_state>` of ``vecenv`` and sign it; None when
    impossible.

    Only the serial backend with every env in one batch and picklable envs can be snapshotted (other backends
    keep their envs in other processes; envs holding e.g. pygame surfaces cannot be pickled); a vector env that
    is closed or has a batch in flight gives None too, and so does a missing signing key (see the module
    docstring).
    """
    try:
        state = vecenv.get_state()
    except APIUsageError as exc:  # closed, or not between batches: resume restarts the envs instead
        log.debug("env snapshot skipped: %s", exc)
        return None
    if state is None:
        log.debug("env snapshot skipped: backend %r or unpicklable envs", vecenv.backend)
        return None
    key = _signing_key()
    if key is None:
        return None
    data = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    return ENV_STATE_TAG + _mac(key, data) + data


def restore_env_state(vecenv: VecEnv, blob: bytes) -> bool:
    """Put the envs of :func:`snapshot_env_state` back into a freshly reset vector env (see
    :meth:`VecEnv.set_state() <shoal.vector.VecEnv.set_state>`).

    The snapshot is unpickled only when its signature verifies under this user's key (see the module
    docstring). The vector env must have just returned its first batch (``async_reset`` + ``recv``). True on
    success; False when the snapshot is not signed by this user's key (another machine or user, a modified file),
    when another shoal or Python version wrote it, when this vector env cannot take it (another backend, number
    of envs or buffer shapes), or when it cannot be unpickled here (the caller then restarts the envs).
    """
    if not isinstance(blob, bytes) or not blob.startswith(ENV_STATE_TAG):
        written = blob.split(b"\n", 1)[0][:80] if isinstance(blob, bytes) else b"?"
        log.warning("the env snapshot was written by another version of shoal, Python or cloudpickle (%r; this one "
                    "reads %r); the envs restart instead", written.decode(errors="replace"),
                    ENV_STATE_TAG.decode().strip())
        return False
    body = blob[len(ENV_STATE_TAG):]
    mac, data = body[:_MAC_SIZE], body[_MAC_SIZE:]
    key = _signing_key()
    if key is None or len(mac) != _MAC_SIZE or not hmac.compare_digest(mac, _mac(key, data)):
        log.warning(
            "the env snapshot in this checkpoint is not signed with this user's key %s (written on another machine "
            "or by another user, or modified): it is not unpickled, since that could run code from the file; the "
            "envs restart from a fresh reset. To resume exactly elsewhere, copy the key file along with the run",
            checkpoint_key_path(),
        )
        return False
    try:
        state = pickle.loads(data)
    except Exception as exc:  # e.g. an env class that changed since: restart the envs instead
        log.warning("cannot read the env snapshot (%s: %s); the envs restart instead", type(exc).__name__, exc)
        return False
    return vecenv.set_state(state)
