"""GymnasiumEmulator: a single-agent ``gymnasium.Env`` as one slot with flat observations and actions."""

from __future__ import annotations

import functools
import math
from typing import Any

import gymnasium as gym
import numpy as np

from shoal.emulation.actions import ActionLayout
from shoal.emulation.base import (
    ACTION_MASK_KEY,
    Buffers,
    Emulator,
    State,
    add_episode,
    bad_observation,
    bad_reward,
    checked_reward,
    split_action_mask,
)
from shoal.emulation.finite import FiniteCheck, nonfinite_error, reward_is_finite
from shoal.emulation.flatten import Flattener
from shoal.emulation.layout import compile_layout
from shoal.errors import APIUsageError, NonFiniteError, SpaceError

try:  # the native row copy: numpy exports no buffer (it builds a format string for every fresh array it exports)
    from shoal.emulation._rowcopy import NonFiniteValue, copy_row, copy_row_checked
except ImportError:  # built without a C compiler (or an older build): memoryview assignments, a little slower
    copy_row = copy_row_checked = None

    class NonFiniteValue(ArithmeticError):  # type: ignore[no-redef]  # never raised without the module
        """Stands in for the native module's exception."""

__all__ = ["GymnasiumEmulator", "copy_row", "flat_copy", "restart", "uses_own_step"]

_MAX_TABLE = 1 << 16  # largest Discrete action space served by the lookup table in step()

_READY = State.READY

StepResult = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]


@functools.cache
def _choices(n: int, start: int, dtype: np.dtype) -> dict[int, Any]:
    """Flat index -> native action of ``Discrete(n, start)`` (numpy integers of ``dtype``), shared by every
    emulator of such a space: many envs in one process then read one table that stays in cache. Read-only."""
    return {i: dtype.type(start + i) for i in range(n)}


class GymnasiumEmulator(Emulator):
    """Wrap a ``gymnasium.Env`` as an emulated env with ``num_agents == 1``.

    * Observations are flattened into ``obs[0]`` (``[1, flat_size]``); a legal-action mask found under
      ``action_mask_key`` in a Dict observation or in ``info`` is moved to ``action_masks[0]``.
    * Actions are flat (see :class:`~shoal.emulation.actions.ActionLayout`) with shape ``[1, *flat_shape]`` and
      are converted back to the env's native structure before ``env.step``.
    * Episodes auto-reset in the same step. That step's ``infos[0]`` holds the env's last step info plus
      ``"final_observation"`` (the flat final observation, a copy, for bootstrapping truncated episodes),
      ``"episode"`` (``{"return", "length"}``, merged with an env's own ``"episode"`` dict: see
      :func:`~shoal.emulation.base.add_episode`) and ``"reset_info"``; ``obs`` already holds the new episode's
      first observation.

    The returned arrays are the emulator's buffers: they are overwritten by the next call, copy what you keep.

    Args:
        env: the environment. Its spaces may be any nesting of supported spaces.
        buffers: arrays to write into (see :class:`Buffers`); allocated when omitted.
        action_mask_key: key of the legal-action mask in a Dict observation or in infos; ``None`` disables it.
        check_observations: check the first observation against the observation space.
        check_finite: raise :class:`~shoal.errors.NonFiniteError` when a reward or a float observation entry
            (final observations included) is NaN or infinite, naming the field and the step of the episode.
            Measured on CartPole (``benchmarks/emulation.py`` style, checked and unchecked emulators interleaved)
            it costs about 0.3% of the emulated step with the native row copy (the scan runs inside the copy);
            without the native module about 0.5 us a step (8%), more for large or nested float rows (numpy
            scans them). Integer observations are never scanned.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "step_native" in vars(cls):
            raise TypeError(f"{cls.__name__} defines step_native(), which GymnasiumEmulator has no hook for: that "
                            "code would never run. Override step() (flat actions, see its docstring) instead.")

    def __init__(self, env: gym.Env, buffers: Buffers | None = None, action_mask_key: str | None = ACTION_MASK_KEY,
                 check_observations: bool = True, check_finite: bool = True) -> None:
        if not isinstance(env, gym.Env):
            raise APIUsageError(f"GymnasiumEmulator needs a gymnasium.Env, got {type(env).__name__}; use "
                                "shoal.emulate() to pick the emulator for PettingZoo envs")
        self.env = env
        obs_space, self._mask_in_obs = split_action_mask(env.observation_space, action_mask_key)
        self._mask_key = action_mask_key if action_mask_key is not None else object()
        self.obs_layout = compile_layout(obs_space)
        self.action_layout = ActionLayout(env.action_space)
        self.num_agents = 1
        self.agents = ["agent_0"]
        self._check = check_observations
        # (No attribute of its own for the option: CPython 3.11 keeps at most 30 instance attributes in its fast
        # layout, and step() reads many of them; ``_finite`` is None when the check is off.)
        self._finite = FiniteCheck(self.obs_layout) if check_finite else None
        self.buffers = Buffers.allocate(self.buffer_spec())
        if buffers is not None:
            self.attach(buffers)
        else:
            self._bind()
        self._link_env()
        self._flags_up = False
        self._row_typed = False  # the env's observations have the row's dtype and shape (set by reset)
        self._mask_set = False

    @property
    def _who(self) -> str:
        """The env's name for error messages."""
        return type(self.env.unwrapped).__name__

    def _link_env(self) -> None:
        """The table of native Discrete actions by flat index (used by ``step``; live only while the env is
        ready)."""
        n = int(self.action_layout.flat_space.n) if self.action_layout.kind == "discrete" else 0
        space = self.env.action_space
        self._ready_choices = _choices(n, int(space.start), space.dtype) if 0 < n <= _MAX_TABLE else None
        self._choices = self._ready_choices if self._state is State.READY else None

    def _bind(self) -> None:
        buffers = self.buffers
        self._writer = Flattener(self.obs_layout, buffers.obs[0])
        self._final_writer = Flattener(self.obs_layout, np.zeros_like(buffers.obs[0]))
        # A single array leaf without a mask in the observation is written with one assignment.
        self._plain = self._writer._single if not self._mask_in_obs else None
        # copy_row (or, without the native module, a memoryview) writes a row of the same type with less overhead
        # than numpy's assignment; step() uses it when the env's observations have the row's dtype and shape
        # (``_row_typed``).
        self._plain_mv = memoryview(self._plain) if self._plain is not None else None
        # The native copy for step(): with the finite check it scans the reward and the row it has just written
        # (rows of integers hold no NaN: it skips them).
        self._copy = None if copy_row is None else copy_row_checked if self._finite is not None else copy_row
        row = buffers.obs[0]
        # The shape and dtype of the one array that fills the row: a final observation of them is copied directly
        # (unless a subclass strips masks its own way, whose code must run).
        plain = self._plain
        own_strip = type(self)._strip_mask is GymnasiumEmulator._strip_mask
        self._fill = (plain.shape, row.dtype) if plain is not None and own_strip and plain.size == row.size and (
            plain.dtype == row.dtype) else None
        self._reward_mv = memoryview(buffers.rewards)
        self._obs, self._rewards = buffers.obs, buffers.rewards
        self._terminals, self._truncations = buffers.terminals, buffers.truncations
        buffers.agent_types[:] = 0

    # ----------------------------------------------------------------------------------------------------------

    def _write(self, obs: Any, info: dict[str, Any]) -> None:
        mask = None
        if self._mask_in_obs:
            mask = obs[self._mask_key]
            obs = {key: value for key, value in obs.items() if key != self._mask_key}
        elif info and self._mask_key in info:
            mask = info[self._mask_key]
        try:
            self._writer.write(obs)
        except SpaceError as exc:
            raise bad_observation(self._who, exc) from None
        if mask is not None and self.buffers.action_masks is not None:
            self.buffers.action_masks[0] = np.asarray(mask).reshape(-1).astype(bool)
            self._mask_set = True
        elif self._mask_set:
            self._unmask()

    def _unmask(self) -> None:
        """Every action legal (the env gives no mask, or no longer)."""
        if self.buffers.action_masks is not None:
            self.buffers.action_masks[0] = True
        self._mask_set = False

    def _strip_mask(self, obs: Any) -> Any:
        if self._mask_in_obs:
            return {key: value for key, value in obs.items() if key != self._mask_key}
        return obs

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Reset the env (seeded when ``seed`` is given).

        Returns:
            ``obs`` ``[1, flat_size]`` and ``infos``, a list with the env's reset info.
        """
        if self._state is State.CLOSED:
            self._require_ready("reset")
        obs, info = self.env.reset(seed=seed, options=options)
        if self._check:
            self.check_first_observation(self.env.observation_space, obs, self._who)
            self._check = False
        self._write(obs, info)
        if self._finite is not None:
            self._verify(0.0, 0)
        if not self._mask_set:
            self._unmask()  # all legal until the env says otherwise
        plain = self._plain
        self._row_typed = plain is not None and type(obs) is np.ndarray and obs.dtype == plain.dtype and (
            obs.shape == plain.shape)
        buffers = self.buffers
        buffers.masks[0] = True
        buffers.rewards[0] = 0.0
        buffers.terminals[0] = False
        buffers.truncations[0] = False
        self._return, self._length = 0.0, 0
        self._flags_up = False
        self._state = State.READY
        self._choices = self._ready_choices
        return buffers.obs, [info]

    def _native_action(self, actions: Any) -> Any:
        """The env's native action for flat ``actions`` ``[1, *flat_shape]`` (validated); raises unless the env
        is ready."""
        if self._state is not _READY:
            self._require_ready("step")
        actions = self.action_layout.validate(actions, 1)
        return self.action_layout.to_native(actions[0])

    def step(self, actions: np.ndarray) -> StepResult:
        """Apply ``actions[0]`` (flat; shape ``[1, *flat_shape]``); auto-reset when the episode ends.

        Returns:
            ``(obs [1, flat_size], rewards float32[1], terminals bool[1], truncations bool[1], infos [dict])``.
        """
        # Fast path for a Discrete action space: one lookup yields the native action (a numpy integer of the space's
        # dtype, which Discrete.contains checks quickest). ``_choices`` is None unless the env is ready; anything
        # else (not ready, not a [1] array of integers, out of range) takes the checked path.
        try:
            (index,) = actions.tolist()
            action = self._choices[index] if type(index) is int else None
        except (AttributeError, TypeError, ValueError, KeyError):
            action = None
        if action is None:
            action = self._native_action(actions)
        obs, reward, terminated, truncated, info = self.env.step(action)
        try:
            self._reward_mv[0] = reward
        except (TypeError, ValueError):  # a 0-d array, or not a number at all
            self._rewards[0] = checked_reward(self._who, reward)
        try:
            self._return, self._length = self._return + reward, self._length + 1
        except TypeError:
            raise bad_reward(self._who, reward) from None
        if terminated or truncated:
            if self._finite is not None and not reward_is_finite(reward):
                raise self._nonfinite("reward", reward)
            info = self._end_episode(obs, terminated, truncated, info)
        else:
            if self._flags_up:
                self._terminals[0] = self._truncations[0] = False
                self._flags_up = False
            # The step's cost is mostly Python overhead: the common case (an observation of the row's exact type,
            # no mask involved) is written here with one copy, the rest by _observe. The native copy also checks
            # the reward and the row for NaN and infinity when asked to (``_copy`` is then copy_row_checked).
            if self._row_typed and not self._mask_set and not (info and self._mask_key in info):
                try:
                    copy = self._copy
                    if copy is not None:
                        copy(self._plain, obs, reward)
                    elif type(obs) is np.ndarray:  # as copy_row: other objects go through numpy
                        self._plain_mv[:] = obs
                        if self._finite is not None:
                            self._quick_verify(reward)
                    else:
                        raise TypeError(type(obs).__name__)
                except (ValueError, TypeError, NotImplementedError):
                    self._row_typed = False  # the observations stopped matching the row exactly: numpy from now on
                    self._observe(obs, info)
                    if self._finite is not None:
                        self._verify(reward, self._length)
                except NonFiniteValue as exc:
                    field, index = exc.args
                    raise self._nonfinite_at(field, index, reward) from None
            else:
                self._observe(obs, info)
                if self._finite is not None:
                    self._verify(reward, self._length)
        return self._obs, self._rewards, self._terminals, self._truncations, [info]

    # ---- the finite check ----------------------------------------------------------------------------------

    def _nonfinite(self, field: str, value: Any, step: int | None = None) -> NonFiniteError:
        step = self._length if step is None else step
        when = "on reset" if step == 0 else f"at step {step} of its episode"
        return nonfinite_error(self._who, field, value, when,
                               "To let such values through, pass check_finite=False to shoal.emulate.")

    def _nonfinite_at(self, field: str, index: int, reward: Any, step: int | None = None) -> NonFiniteError:
        """The error for what the native copy found: the reward, or element ``index`` of the observation row."""
        if field == "reward":
            return self._nonfinite("reward", reward, step)
        found = self._finite.first_bad(self._obs[0]) if self._finite is not None else None
        if found is None:  # not expected: the same row was scanned
            return self._nonfinite(f"obs (entry {index} of the flat row)", self._obs[0, index], step)
        return self._nonfinite(found[1], found[2], step)

    def _quick_verify(self, reward: Any) -> None:
        """:meth:`_verify` for step()'s direct copy without the native module: a short float row and the reward
        summed in Python, faster than numpy starts a scan (NaN and infinity carry through a sum)."""
        plain = self._plain
        if self._finite.whole and plain.ndim == 1 and plain.size <= 64 and math.isfinite(
                sum(plain.tolist()) + reward):
            return
        self._verify(reward, self._length)

    def _verify(self, reward: Any, step: int) -> None:
        """Raise :class:`NonFiniteError` if ``reward`` or the observation row is NaN or infinite."""
        if not reward_is_finite(reward):
            raise self._nonfinite("reward", reward, step)
        row = self._obs[0]
        if self._finite.any_bad(row):
            found = self._finite.first_bad(row)
            raise self._nonfinite(found[1], found[2], step)

    @property
    def native_actions(self) -> dict[int, Any] | None:
        """Flat index -> native action of a ``Discrete`` action space while the env is ready, else None.

        The table is shared (read-only) by every emulator of the same space: a caller that validated a batch of
        actions at once (:class:`~shoal.emulation.gymnasium_batch.GymnasiumBatch`) looks them up in it.
        """
        return self._choices

    def _observe(self, obs: Any, info: dict[str, Any]) -> None:
        """Write a mid-episode observation that ``step``'s direct copy did not take (another dtype or shape
        than the row's, or an action mask in it, in ``info`` or left from before): numpy's assignment converts a
        plain one, :meth:`_write` does the rest (and raises the descriptive SpaceError)."""
        if self._plain is not None and not self._mask_set and not (info and self._mask_key in info):
            try:
                self._plain[...] = obs
                return
            except (ValueError, TypeError):
                pass
        self._write(obs, info)

    def _end_episode(self, obs: Any, terminated: bool, truncated: bool, info: dict[str, Any]) -> dict[str, Any]:
        """Record the finished episode in ``info`` and reset the env in the same step; return the new info."""
        self._terminals[0] = terminated
        self._truncations[0] = truncated
        self._flags_up = True
        final = flat_copy(obs, *self._fill) if self._fill is not None else None
        if final is None:
            try:
                final = self._final_writer.write(self._strip_mask(obs)).copy()
            except SpaceError as exc:
                raise bad_observation(self._who, exc) from None
        if self._finite is not None:
            self._verify_final(final)
        info, obs, reset_info = restart(self.env, info, final, self._return, self._length)
        self._return, self._length = 0.0, 0
        # With the native module, the new episode's first observation may take step()'s direct copy too, unless a
        # subclass or this very object writes observations its own way (that _write must run on every reset).
        # (Reading ``__dict__`` instead would slow every later attribute access of the emulator.)
        copy = self._copy
        if copy is not None and self._row_typed and not self._mask_set and not (
                reset_info and self._mask_key in reset_info) and (
                getattr(self._write, "__func__", None) is _BASE_WRITE):
            try:
                copy(self._plain, obs, 0.0)
                return info
            except (ValueError, TypeError):
                pass  # _write converts it, or names the problem
            except NonFiniteValue as exc:  # in the new episode's first observation
                raise self._nonfinite_at(exc.args[0], exc.args[1], 0.0, step=0) from None
        self._write(obs, reset_info)
        if self._finite is not None:
            self._verify(0.0, 0)
        return info

    def _verify_final(self, final: np.ndarray) -> None:
        """Raise :class:`NonFiniteError` if the episode's flat final observation holds a NaN or an infinity."""
        if self._finite.any_bad(final):
            found = self._finite.first_bad(final)
            raise self._nonfinite(f"{found[1]} (the final observation)", found[2])

    def close(self) -> None:
        """Close the wrapped env; further calls raise :class:`APIUsageError`. Safe to call twice."""
        self._choices = None
        super().close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()  # the action table and the memoryviews are rebuilt on load
        for derived in ("_ready_choices", "_choices", "_plain_mv", "_reward_mv", "_copy"):
            state.pop(derived, None)
        state["_finite"] = self._finite is not None  # the option only: the check is rebuilt on load
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.pop("_discrete_n", None)  # kept by snapshots of older versions; _link_env computes it
        check = state.pop("_finite", True)  # snapshots from before the option: checked, the default
        self.__dict__.update(state)
        self._finite = FiniteCheck(self.obs_layout) if check else None
        self._bind()  # pickling copies each array on its own: take views of the restored buffers again
        self._link_env()


_BASE_WRITE = GymnasiumEmulator._write


def uses_own_step(env: Any) -> bool:
    """Whether ``env`` is a :class:`GymnasiumEmulator` stepping with the class's own ``step`` (a subclass that
    overrides it must have its code run, so callers that would bypass ``step`` do not)."""
    cls = type(env)
    return issubclass(cls, GymnasiumEmulator) and cls.step is GymnasiumEmulator.step


def flat_copy(obs: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
    """``obs`` as a new flat array of ``dtype`` if it is an array of ``shape`` that converts to it (what writing it
    into a row of that shape and dtype and copying the row makes), else None."""
    if type(obs) is np.ndarray and obs.shape == shape:
        try:  # reshaping a 1-d array would cost more than the copy
            return obs.astype(dtype) if obs.ndim == 1 else obs.reshape(-1).astype(dtype)
        except (TypeError, ValueError):
            return None
    return None


def restart(env: gym.Env, info: dict[str, Any], final: np.ndarray, episode_return: float, length: int
            ) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """Report a finished episode of ``env`` and reset it.

    Args:
        info: the info of the episode's last step (not modified).
        final: the episode's last observation, flat (``[flat_size]``, a copy the caller hands over).

    Returns:
        ``(info, obs, reset_info)``: a copy of ``info`` with ``"final_observation"``, ``"episode"``
        (``{"return", "length"}``, see :func:`~shoal.emulation.base.add_episode`) and ``"reset_info"``; the new
        episode's first observation (native, not written anywhere yet); the reset info.
    """
    episode = {"return": float(episode_return), "length": length}
    if info:
        info = dict(info)
        info["final_observation"] = final
        add_episode(info, episode)
    else:  # the usual empty info: the same dict, built at once
        info = {"final_observation": final, "episode": episode}
    obs, reset_info = env.reset()
    info["reset_info"] = reset_info
    return info, obs, reset_info
