"""GymnasiumBatch: many single-agent ``GymnasiumEmulator`` s over consecutive buffer rows, stepped as one.

A vector env's group of emulators spends a good part of each step on per-env bookkeeping: a call into each
emulator, its checks, the running episode return and length. For the common case (a plain Box observation of at
most :data:`MAX_ROW_BYTES`, Discrete actions) a batch runs one loop over the envs instead: each env steps and its
observation and reward are written into its rows at once, as a lone emulator would; episode lengths are counted
in one array, and an episode that ends is reported and reset inside the loop while the env is still in cache.
Only envs whose info carries an action mask (or that had one) go through their emulator's writing code. The
buffers and infos come out exactly as if every emulator had stepped on its own.

While a batch steps the envs, the running returns and lengths (and which flags to clear) live in the batch:
:meth:`GymnasiumBatch.flush` writes them back to the emulators (before they are pickled, or stepped one by one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from shoal.emulation.base import bad_observation, bad_reward, checked_reward
from shoal.emulation.gymnasium import GymnasiumEmulator, copy_row, flat_copy, restart, uses_own_step
from shoal.errors import APIUsageError, SpaceError

__all__ = ["MAX_ROW_BYTES", "GymnasiumBatch"]

#: Largest observation row (bytes) a batch takes; larger rows (frames) spend their time copying, not in Python.
MAX_ROW_BYTES = 1024

#: ``(row, info)`` for every env with a non-empty info dict.
InfoPairs = list[tuple[int, dict[str, Any]]]

class GymnasiumBatch:
    """Step ``envs`` together; env ``i`` owns row ``i`` of every array.

    Build with :meth:`build`, which returns None when the envs do not fit (see there).
    """

    def __init__(self, envs: Sequence[GymnasiumEmulator], arrays: dict[str, np.ndarray], leaves: np.ndarray) -> None:
        self.envs = list(envs)
        n = len(self.envs)
        self._steps = [env.env.step for env in self.envs]
        self._inner = [env.env for env in self.envs]
        self._writers = [env._writer for env in self.envs]
        table = self.envs[0].native_actions
        assert table is not None
        self._table = table
        self._n_actions = len(table)
        self._leaves = leaves
        self._leaf_shape, self._dtype = leaves.shape[1:], leaves.dtype
        # A direct copy (copy_row, or a memoryview write without the native module) takes an observation of the
        # row's exact type and length only, with the least overhead; other observations go through numpy, which
        # converts (and broadcasts) them as the emulator does.
        self._typed = len(self._leaf_shape) == 1 and all(env._row_typed for env in self.envs)
        width = int(np.prod(self._leaf_shape))
        self._rows = list(leaves) if self._typed else []
        self._flat = memoryview(leaves.reshape(-1)) if self._typed else memoryview(b"")
        self._slices = [slice(i * width, (i + 1) * width) for i in range(n)] if self._typed else []
        self._rewards = arrays["rewards"]
        self._reward_mv = memoryview(self._rewards)
        self._terminals, self._truncations = arrays["terminals"], arrays["truncations"]
        self._mask_key = self.envs[0]._mask_key
        self._returns = [env._return for env in self.envs]
        self._lengths = np.array([env._length for env in self.envs], np.int64)
        self._masked = {i for i, env in enumerate(self.envs) if env._mask_set}  # a mask is set in its row
        self._flags_up = any(env._flags_up for env in self.envs) or bool(
            self._terminals.any() or self._truncations.any())

    @classmethod
    def build(cls, envs: Sequence[Any], arrays: dict[str, np.ndarray]) -> GymnasiumBatch | None:
        """A batch over ``envs`` and their rows of ``arrays`` (``obs`` ``[n, flat_size]``, ``rewards``,
        ``terminals``, ``truncations`` ``[n]``), or None unless every env is a ready ``GymnasiumEmulator`` that
        steps, ends episodes and writes observations with the class's own code, all share one Discrete action
        table, one action-mask key and one observation layout that is a single array filling a row of at most
        :data:`MAX_ROW_BYTES`, and the rows are the envs' own buffers, contiguous in memory."""
        if not envs or any(not _batchable(env) or env.native_actions is None for env in envs):
            return None
        first = envs[0]
        table, kind, key = first.native_actions, _row_kind(first), _key(first)
        if kind is None or any(env.native_actions is not table or _row_kind(env) != kind or _key(env) != key
                               for env in envs):
            return None
        leaf = first.obs_layout.leaves[0]
        obs = arrays["obs"]
        if obs.shape != (len(envs), first.obs_layout.flat_size) or obs[0].nbytes > MAX_ROW_BYTES or (
                not obs.flags.c_contiguous):
            return None
        for i, env in enumerate(envs):
            own = env.buffers
            if not all(np.shares_memory(getattr(own, name), arrays[name][i : i + 1])
                       for name in ("obs", "rewards", "terminals", "truncations")):
                return None
        leaves = obs.view()
        try:
            leaves.shape = (len(envs), *leaf.shape)  # a view or an error, never a copy
        except AttributeError:
            return None
        return cls(envs, arrays, leaves)

    def step(self, actions: np.ndarray) -> InfoPairs:
        """Step env ``i`` with the flat Discrete action ``actions[i]`` (``int[n]``); return the non-empty infos.

        If an env raises, the envs before it have stepped, it and the envs after it are left as they were (an env
        that raised while ending its episode or writing its observation has counted the step, as a lone
        emulator does), and the error propagates.

        Raises:
            APIUsageError: not one action per env, or an action outside the Discrete space (no env is stepped
                then).
            EnvError: an env returned a reward that is not one number.
        """
        n = self._n_actions
        if len(actions) != len(self.envs):
            raise APIUsageError(f"{len(actions)} actions for a group of {len(self.envs)} envs: pass one flat "
                                "action per env")
        if len(actions) and (actions.min() < 0 or actions.max() >= n):
            env = int(np.flatnonzero((actions < 0) | (actions >= n))[0])
            raise APIUsageError(f"flat action {actions[env]} of env {env} of this group is outside Discrete({n}): "
                                f"valid flat actions are 0..{n - 1}")
        indices = actions.tolist()
        raised: tuple[np.ndarray, np.ndarray] | None = None  # the flags of the episodes that ended last step
        if self._flags_up:
            raised = self._terminals.copy(), self._truncations.copy()
            self._terminals[:] = False
            self._truncations[:] = False
            self._flags_up = False
        self._lengths += 1
        table, returns, reward_mv = self._table, self._returns, self._reward_mv
        typed, flat, slices, leaves = self._typed, self._flat, self._slices, self._leaves
        native, rows = copy_row is not None, self._rows
        masked, key = self._masked, self._mask_key
        pairs: InfoPairs = []
        handled: set[int] = set()  # envs whose action mask was dealt with in the loop
        i, counted = 0, False  # the env stepping, and whether its step counts yet (for _undo)
        try:
            for i, (env_step, index) in enumerate(zip(self._steps, indices, strict=True)):
                counted = False
                obs, reward, terminated, truncated, info = env_step(table[index])
                try:
                    reward_mv[i] = reward
                except (TypeError, ValueError):  # a 0-d array, or not a number at all
                    self._rewards[i] = checked_reward(self._who(i), reward)
                try:
                    returns[i] += reward
                except TypeError:
                    raise bad_reward(self._who(i), reward) from None
                counted = True
                latest = info  # the info that may carry the env's next action mask
                if terminated or truncated:
                    # At once, while the env is still in cache; ``obs`` becomes the next episode's first observation.
                    info, obs, latest = self._end_episode(i, obs, terminated, truncated, info)
                try:
                    if typed:
                        if native:
                            copy_row(rows[i], obs)
                        elif type(obs) is np.ndarray:  # as copy_row: other objects go through numpy
                            flat[slices[i]] = obs
                        else:
                            raise TypeError(type(obs).__name__)
                    else:
                        leaves[i] = obs
                except (TypeError, ValueError, NotImplementedError):
                    if typed:  # this env's observations stopped matching the row exactly: numpy from now on
                        typed = self._typed = False
                    try:  # converts what it can, else names the problem, as a lone env does
                        self._writers[i].write(obs)
                    except SpaceError as exc:
                        raise bad_observation(self._who(i), exc) from None
                if info:
                    pairs.append((i, info))
                    # Masks are read now: the env may reuse the arrays it returned at its next step or another's.
                    if (latest and key in latest) or i in masked:
                        env = self.envs[i]
                        env._write(obs, latest)
                        handled.add(i)
                        masked.discard(i)
                        if env._mask_set:
                            masked.add(i)
        except BaseException:
            self._undo(i, counted, raised, handled)
            raise
        self._clear_stale_masks(len(self.envs), handled)
        return pairs

    def _clear_stale_masks(self, stepped: int, handled: set[int]) -> None:
        """All actions legal again for the first ``stepped`` envs whose mask is left from an earlier step."""
        masked = self._masked
        if masked:
            for i in [i for i in masked if i < stepped and i not in handled]:
                self.envs[i]._unmask()
                masked.discard(i)

    def _undo(self, i: int, counted: bool, raised: tuple[np.ndarray, np.ndarray] | None, handled: set[int]) -> None:
        """After env ``i`` raised: envs ``0..i-1`` stay stepped; env ``i`` keeps its step only if it ``counted``
        (it raised after its reward, as a lone emulator would have counted it); the later envs are put back."""
        back = i + 1 if counted else i
        self._lengths[back:] -= 1
        if raised is not None:
            self._terminals[back:] = raised[0][back:]
            self._truncations[back:] = raised[1][back:]
        self._flags_up = bool(self._terminals.any() or self._truncations.any())
        self._clear_stale_masks(i, handled)

    def _who(self, i: int) -> str:
        return f"env {i} of this group ({self.envs[i]._who})"

    def _end_episode(self, i: int, obs: Any, terminated: bool, truncated: bool, info: dict[str, Any]
                     ) -> tuple[dict[str, Any], Any, dict[str, Any]]:
        """What ``GymnasiumEmulator._end_episode`` does for env ``i``, short of writing the new episode's first
        observation (returned with the new info and the reset info), and touching as little of the emulator as
        it can: an env out of cache costs more than the work."""
        self._terminals[i] = terminated
        self._truncations[i] = truncated
        self._flags_up = True
        final = flat_copy(obs, self._leaf_shape, self._dtype)
        if final is None:
            try:
                final = self.envs[i]._final_writer.write(obs).copy()
            except SpaceError as exc:
                raise bad_observation(self._who(i), exc) from None
        out = restart(self._inner[i], info, final, self._returns[i], int(self._lengths[i]))
        self._returns[i], self._lengths[i] = 0.0, 0
        return out

    def flush(self) -> None:
        """Write the running episode returns and lengths back into the emulators, and tell them to clear the flags
        of the episodes that ended on the last step."""
        ended = (self._terminals | self._truncations).tolist() if self._flags_up else [False] * len(self.envs)
        for env, ret, length, up in zip(self.envs, self._returns, self._lengths.tolist(), ended, strict=True):
            env._return, env._length, env._flags_up = ret, length, up


#: The emulator methods whose work the batch does itself: a subclass that overrides one must step on its own.
_BYPASSED = ("_native_action", "_observe", "_end_episode", "_write", "_unmask", "_strip_mask")


def _batchable(env: Any) -> bool:
    """A :class:`GymnasiumEmulator` whose class keeps the base class's stepping, episode-ending and writing code
    (the batch does that work itself, so a subclass's own version of it must run through the emulator)."""
    cls = type(env)
    return uses_own_step(env) and all(getattr(cls, name) is getattr(GymnasiumEmulator, name) for name in _BYPASSED)


def _key(env: GymnasiumEmulator) -> Any:
    """The env's action-mask key (None when masks are off: the emulator then holds a bare ``object()`` that no
    key equals)."""
    return None if type(env._mask_key) is object else env._mask_key


def _row_kind(env: GymnasiumEmulator) -> tuple | None:
    """Shape and dtype of the one array that fills ``env``'s observation row, or None if the row holds more (or
    an action mask comes in the observation)."""
    layout = env.obs_layout
    if env._plain is None or layout.is_bytes or len(layout.leaves) != 1:
        return None
    leaf = layout.leaves[0]
    if (leaf.start, leaf.stop) != (0, layout.flat_size):
        return None
    return leaf.shape, leaf.dtype
