"""What every emulator shares: the slot buffers it writes into, its lifecycle, and observation checks."""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from gymnasium import spaces

from shoal.emulation.actions import ActionLayout
from shoal.emulation.layout import Layout, format_path
from shoal.errors import APIUsageError, EnvError, SpaceError

__all__ = ["Buffers", "Emulator", "add_episode", "find_violation", "split_action_mask"]

ACTION_MASK_KEY = "action_mask"


@dataclass
class Buffers:
    """The arrays an emulator writes each step; each may be a slice of a larger (shared-memory) buffer.

    Shapes for ``N = num_agents`` slots:
        obs: ``[N, flat_size]`` of ``obs_layout.flat_dtype``.
        rewards: ``float32[N]``; terminals, truncations, masks: ``bool[N]``.
        action_masks: ``bool[N, mask_width]`` (1 = legal) or ``None`` for continuous action spaces. For a
            ``Discrete(n)`` flat action ``mask_width = n``; otherwise ``sum(nvec)`` (one block per discrete entry).
        agent_types: ``int32[N]``, the agent-type id of the agent in each slot (-1 for an empty slot).
    """

    obs: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    truncations: np.ndarray
    masks: np.ndarray
    agent_types: np.ndarray
    action_masks: np.ndarray | None = None

    @staticmethod
    def spec(num_agents: int, obs_layout: Layout, action_layout: ActionLayout) -> dict[str, tuple[tuple, np.dtype]]:
        """Name -> (shape, dtype) of every buffer for one emulator, in field order; omits absent ones."""
        out: dict[str, tuple[tuple, np.dtype]] = {
            "obs": ((num_agents, obs_layout.flat_size), obs_layout.flat_dtype),
            "rewards": ((num_agents,), np.dtype(np.float32)),
            "terminals": ((num_agents,), np.dtype(np.bool_)),
            "truncations": ((num_agents,), np.dtype(np.bool_)),
            "masks": ((num_agents,), np.dtype(np.bool_)),
            "agent_types": ((num_agents,), np.dtype(np.int32)),
        }
        width = action_mask_width(action_layout)
        if width:
            out["action_masks"] = ((num_agents, width), np.dtype(np.bool_))
        return out

    @classmethod
    def allocate(cls, spec: dict[str, tuple[tuple, np.dtype]]) -> Buffers:
        """Fresh zeroed buffers for a spec from :meth:`spec`."""
        return cls(**{name: np.zeros(shape, dtype) for name, (shape, dtype) in spec.items()})

    def check(self, spec: dict[str, tuple[tuple, np.dtype]]) -> None:
        """Raise :class:`APIUsageError` if any buffer's shape or dtype differs from ``spec``, or it is read-only."""
        for f in fields(self):
            array = getattr(self, f.name)
            if f.name not in spec:
                if array is not None:
                    raise APIUsageError(f"buffer {f.name!r} was given but this emulator has none; pass None")
                continue
            shape, dtype = spec[f.name]
            if not isinstance(array, np.ndarray) or array.shape != shape or array.dtype != dtype:
                got = (getattr(array, "shape", None), getattr(array, "dtype", type(array).__name__))
                raise APIUsageError(f"buffer {f.name!r} has (shape, dtype) {got}; expected {(shape, dtype)}")
            if not array.flags.writeable:
                raise APIUsageError(f"buffer {f.name!r} is read-only; the emulator writes into every buffer it is "
                                    "handed: pass writeable arrays")


def action_mask_width(action_layout: ActionLayout) -> int:
    """Width of one slot's legal-action mask (0 for purely continuous actions)."""
    if action_layout.kind == "discrete":
        return int(action_layout.flat_space.n)
    return int(action_layout.nvec.sum())


def add_episode(info: dict[str, Any], episode: dict[str, Any]) -> None:
    """Report a finished episode's ``{"return", "length"}`` as ``info["episode"]`` without losing the env's own.

    An env may report episodes under the same key (gymnasium's ``RecordEpisodeStatistics`` puts
    ``{"r", "l", "t"}`` there): a dict without ``"return"``/``"length"`` keys is kept and extended with them; any
    other value moves to ``info["env_episode"]``.
    """
    theirs = info.get("episode", _ABSENT)
    if theirs is _ABSENT:
        info["episode"] = episode
        return
    if isinstance(theirs, dict) and not theirs.keys() & episode.keys():
        info["episode"] = {**theirs, **episode}
        return
    info["env_episode"] = theirs
    info["episode"] = episode


_ABSENT = object()


def bad_reward(who: str, reward: Any) -> EnvError:
    """The error for an env whose step returned ``reward`` that is not a single real number."""
    return EnvError(f"{who} returned the reward {reward!r} ({type(reward).__name__}); a reward must be one real "
                    "number (a Python or numpy float, int or bool, or a 0-d array of one). Fix the env's step(), "
                    "or wrap it to sum or pick the reward it means.")


def bad_observation(who: str, exc: SpaceError) -> SpaceError:
    """The error for an env (or agent) ``who`` whose observation does not fit its observation space; ``exc``, the
    :class:`~shoal.emulation.flatten.Flattener`'s error, says which leaf fails and how."""
    reason = str(exc).rstrip(".")
    return SpaceError(f"{who} returned an observation that does not fit its observation space: {reason}. Fix the "
                      "env so that its observations match its observation_space (shape and dtype), or declare the "
                      "space it really returns.")


def checked_reward(who: str, reward: Any) -> Any:
    """``reward`` if it is one real number (a 0-d numeric array counts); else raise :func:`bad_reward`'s error."""
    value = np.asarray(reward) if not isinstance(reward, str) else None
    if value is None or value.shape != () or value.dtype.kind not in "biuf":
        raise bad_reward(who, reward)
    return reward


def split_action_mask(space: spaces.Space, key: str | None = ACTION_MASK_KEY) -> tuple[spaces.Space, bool]:
    """Remove a legal-action-mask entry ``key`` from a Dict observation space.

    Returns:
        ``(space_without_mask, had_mask)``. A Dict left with a single ``"observation"`` entry keeps its Dict form.
    """
    if key is None or not isinstance(space, spaces.Dict) or key not in space.spaces:
        return space, False
    rest = {name: sub for name, sub in space.spaces.items() if name != key}
    if not rest:
        raise APIUsageError(f"observation Dict holds only {key!r}; there is no observation left to learn from")
    return spaces.Dict(rest), True


def find_violation(space: spaces.Space, sample: Any, path: tuple = ()) -> str | None:
    """Describe the first leaf of ``sample`` that lies outside ``space`` (``None`` when it fits)."""
    if isinstance(space, spaces.Dict):
        if not isinstance(sample, dict):
            return f"{format_path(path)} should be a dict with keys {list(space.spaces)}, got {type(sample).__name__}"
        for key, sub in space.spaces.items():
            if key not in sample:
                return f"{format_path(path)} is missing key {key!r}"
            found = find_violation(sub, sample[key], (*path, key))
            if found:
                return found
        return None
    if isinstance(space, spaces.Tuple):
        if not isinstance(sample, tuple | list) or len(sample) != len(space.spaces):
            return f"{format_path(path)} should be a tuple of {len(space.spaces)} entries"
        for i, sub in enumerate(space.spaces):
            found = find_violation(sub, sample[i], (*path, i))
            if found:
                return found
        return None
    value = sample
    if isinstance(space, spaces.Box | spaces.MultiDiscrete | spaces.MultiBinary):
        value = np.asarray(sample)
        if value.shape != space.shape:
            return f"{format_path(path)} has shape {value.shape}, but its space {space!r} has shape {space.shape}"
        if np.can_cast(value.dtype, space.dtype):
            value = value.astype(space.dtype)
    if not space.contains(value):
        return f"{format_path(path)} = {np.asarray(sample)!r} lies outside its space {space!r}"
    return None


class State(enum.Enum):
    CREATED = "created"
    READY = "ready"
    CLOSED = "closed"


class Emulator:
    """Common lifecycle of the emulators (reset before step, nothing after close) and buffer handling.

    Subclasses set ``num_agents``, ``obs_layout``, ``action_layout`` and ``buffers`` in ``__init__``.
    """

    num_agents: int
    obs_layout: Layout
    action_layout: ActionLayout
    buffers: Buffers
    _state: State = State.CREATED

    @property
    def single_observation_space(self) -> spaces.Box:
        """Flat observation space of one slot: ``Box(shape=(flat_size,), dtype=obs_layout.flat_dtype)``."""
        return self.obs_layout.flat_space

    @property
    def single_action_space(self) -> spaces.Space:
        """Flat action space of one slot (``Discrete``, ``MultiDiscrete`` or ``Box``; see ``ActionLayout``)."""
        return self.action_layout.flat_space

    @property
    def masks(self) -> np.ndarray:
        """``bool[num_agents]``: True where the slot holds a live agent that must act now."""
        return self.buffers.masks

    @property
    def action_masks(self) -> np.ndarray | None:
        """``bool[num_agents, mask_width]`` legal actions (all True when the env gives none); None if continuous."""
        return self.buffers.action_masks

    @property
    def agent_types(self) -> np.ndarray:
        """``int32[num_agents]`` agent-type id per slot (-1 for an empty slot)."""
        return self.buffers.agent_types

    def buffer_spec(self) -> dict[str, tuple[tuple, np.dtype]]:
        """Name -> (shape, dtype) of the buffers this emulator writes (see :class:`Buffers`)."""
        return Buffers.spec(self.num_agents, self.obs_layout, self.action_layout)

    def attach(self, buffers: Buffers) -> None:
        """Write into ``buffers`` from now on (e.g. slices of shared memory). Call before ``reset``."""
        buffers.check(self.buffer_spec())
        self.buffers = buffers
        self._bind()

    def _bind(self) -> None:
        """Rebuild anything that holds views of ``self.buffers`` (override)."""

    def _require_ready(self, what: str) -> None:
        if self._state is State.READY:
            return
        if self._state is State.CLOSED:
            raise APIUsageError(f"{what}() called after close(); create a new environment")
        raise APIUsageError(f"{what}() called before reset(); call reset(seed=...) first")

    def close(self) -> None:
        """Close the wrapped env; further calls raise :class:`APIUsageError`. Safe to call twice."""
        if self._state is not State.CLOSED:
            self._state = State.CLOSED
            self.env.close()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_first_observation(self, space: spaces.Space, obs: Any, who: str) -> None:
        """Raise :class:`EnvError` when the env's first observation lies outside its declared space."""
        problem = find_violation(space, obs)
        if problem:
            raise EnvError(f"{who}: the env returned an observation outside its observation_space: {problem}. "
                           "Fix the env's observation_space (shape, dtype, bounds) or the observation it returns.")
