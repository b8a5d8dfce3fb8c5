"""SB3VecEnv: a shoal vector env as a Stable-Baselines3 ``VecEnv``, so SB3 and sb3-contrib algorithms train on it.

    from stable_baselines3 import PPO
    vec = shoal.vector.make(functools.partial(gymnasium.make, "CartPole-v1"), num_envs=8)
    model = PPO("MlpPolicy", shoal.vector.to_sb3(vec)).learn(50_000)

Needs ``pip install "shoal[sb3]"``. Every agent slot of every env is one SB3 env index: index ``k`` is row ``k`` of
the shoal vector env, that is slot ``k % agents_per_env`` of env ``k // agents_per_env``.

Observations
    SB3 sees the emulated flat row: ``observation_space`` is the vector env's ``single_observation_space`` (a flat
    ``Box``, e.g. ``float32[4]`` for CartPole, ``int8[18]`` for tic-tac-toe) whenever every leaf of the native
    space has one dtype. When the leaves mix dtypes the row is raw bytes, meaningless as numbers, so SB3 gets a
    ``float32`` ``Box`` of every leaf's values instead, leaf after leaf in the layout's order (a ``Discrete`` leaf
    is its integer value, a ``Text`` leaf its character codes). Observations are always copies. Being flat, they
    suit SB3's ``MlpPolicy``.

    ``to_sb3(vec, observations="leaves")`` gives SB3 each leaf of the native space in its own form instead, for
    its ``CnnPolicy`` and ``MultiInputPolicy``: a space with one leaf is that leaf's space (an image ``Box`` stays
    ``uint8[H, W, C]``, so ``CnnPolicy`` applies); a ``Dict``/``Tuple`` space, nested or not, becomes one flat
    ``Dict`` keyed by each leaf's path joined by ``/`` (``"agent/position"``; SB3 takes no nested ``Dict``, and
    torch module names no dots), for
    ``MultiInputPolicy``. ``Discrete``/``MultiDiscrete`` leaves with a ``start`` are shifted to start at 0 (SB3
    one-hot encodes from 0). ``Text`` leaves and spaces registered with
    :func:`shoal.emulation.layout.register_space` have no SB3 space and are refused (use the flat form).

Actions
    The vector env's flat action space: ``Discrete``, ``MultiDiscrete`` or ``Box``. The hybrid layout (mixed discrete
    and continuous leaves) is refused: SB3 has no distribution for it.

Padded slots (waiting, dead or empty agents)
    SB3 steps every index every step and keeps no per-step mask, so the transitions of slots without a live agent
    (``masks`` False: an agent waiting for its turn in a turn-based game, an agent that died earlier in the episode,
    a slot no agent holds) reach its buffers. They look like this to SB3:

    * observation: the zero row; reward 0; done False;
    * the step at which the env starts a new episode ends the padding segment of a slot that was not live: done
      True, ``terminal_observation`` the zero row, not a truncation (so no bootstrapping), no ``"episode"`` info
      (SB3's episode statistics never count it);
    * action masks (:meth:`SB3VecEnv.action_masks`): only the first choice is legal (of each component, for
      ``MultiDiscrete``). Under sb3-contrib's ``MaskablePPO`` such a transition has log-probability 0 whatever the
      weights, so it adds nothing to the policy gradient and no entropy: MaskablePPO never learns its policy from
      padded slots.

    What remains is a limitation of SB3, not something the bridge can hide: the value function (or SAC's critics)
    is still fit on these transitions (zero row, reward 0, value target 0 once a padding segment ends); they count
    in the minibatches and in the advantage normalization; and in a turn-based game an agent's own turns are one
    SB3 step per player apart, so its effective discount per own turn is ``gamma ** num_players``. Plain PPO, A2C
    and SAC (no masks) also take policy-gradient terms from the padded transitions: their actions change nothing
    and their advantages are those of a zero-reward segment, so they add noise, not bias. Use
    ``shoal.train`` (which drops every padded row) when this matters.

Episode ends
    ``dones = terminals | truncations`` (plus the padding ends above). Done rows carry
    ``info["terminal_observation"]`` (the final observation, in the observation form above),
    ``info["TimeLimit.truncated"]`` (True when truncated and not terminated: SB3 then bootstraps from the terminal
    observation) and ``info["episode"] = {"r", "l", "t"}`` (return, length, seconds since the bridge was made), as
    SB3's ``Monitor`` reports them; the other keys of the env's final info are kept.

Threads
    With the ``multiprocessing`` backend, call ``torch.set_num_threads(1)`` (or leave as many cores free as torch
    uses): SB3's torch threads and shoal's workers, which spin briefly while waiting for work, otherwise compete
    for the same cores and a small machine trains orders of magnitude slower.

Env access
    :meth:`~SB3VecEnv.get_attr`, :meth:`~SB3VecEnv.set_attr`, :meth:`~SB3VecEnv.env_method` and rendering reach
    the envs themselves, so they need the ``serial`` backend (the envs of the other backends live in other
    processes or machines, which shoal steps but does not call into): elsewhere they raise ``NotImplementedError``
    naming the backend. ``"action_masks"`` and ``"render_mode"`` are answered by the bridge on every backend, and
    :meth:`~SB3VecEnv.env_is_wrapped` answers ``Monitor`` with True everywhere (the bridge reports Monitor's
    episode info itself) and other wrappers from the envs on ``serial``, False elsewhere. Several SB3 indices
    share one env in multi-agent games: calls are made once per index, on that index's env.
"""

from __future__ import annotations

import functools
import operator
import time
from collections.abc import Sequence
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.env_util import is_wrapped
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import VecEnv as SB3BaseVecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from shoal.emulation import unflatten
from shoal.emulation.actions import HybridBox
from shoal.emulation.layout import Layout, Leaf, format_path
from shoal.errors import APIUsageError
from shoal.vector.base import VecEnv
from shoal.vector.serial import SerialVecEnv

__all__ = ["SB3VecEnv"]

#: Attributes the bridge answers itself, on every backend.
_OWN_ATTRS = ("action_masks", "render_mode")


class SB3VecEnv(SB3BaseVecEnv):
    """A shoal vector env behind the ``stable_baselines3.common.vec_env.VecEnv`` API (see the module docstring).

    Args:
        vec: a shoal vector env with synchronous batches (``batch_size == num_envs``), any backend. The bridge owns
            it from now on: :meth:`close` closes it.
        observations: ``"flat"`` (one ``Box`` row, for ``MlpPolicy``) or ``"leaves"`` (each leaf in its own SB3
            space, for ``CnnPolicy`` and ``MultiInputPolicy``); see the module docstring.

    Attributes:
        vec: the wrapped shoal vector env.
        num_envs: ``vec.num_agents`` (one SB3 index per agent slot).
        observation_space: one row, see the module docstring; action_space: ``vec.single_action_space``.

    Raises:
        APIUsageError: partial batches, a closed vector env, hybrid actions, or ``"leaves"`` with a leaf SB3 has no
            space for.
    """

    def __init__(self, vec: VecEnv, observations: Literal["flat", "leaves"] = "flat") -> None:
        if not isinstance(vec, VecEnv):
            raise APIUsageError(f"to_sb3(vec) takes a shoal vector env (shoal.vector.make(...)), got "
                                f"{type(vec).__name__}")
        if vec.closed:
            raise APIUsageError("to_sb3(vec): the vector env is closed; make a new one with shoal.vector.make")
        if vec.batch_size != vec.num_envs:
            raise APIUsageError(f"to_sb3(vec) needs synchronous batches: SB3 steps every env at once; got "
                                f"batch_size={vec.batch_size}, num_envs={vec.num_envs}. Make the vector env without "
                                "batch_size")
        if isinstance(vec.single_action_space, HybridBox):
            raise APIUsageError(f"to_sb3(vec): the action space mixes discrete and continuous leaves "
                                f"({vec.action_layout.space!r}); SB3 has no distribution for such actions. Use "
                                "shoal.train, or wrap the env to expose only one kind")
        if observations not in ("flat", "leaves"):
            raise APIUsageError(f"to_sb3(vec, observations={observations!r}): choose 'flat' (one Box row, for "
                                "MlpPolicy) or 'leaves' (each leaf in its own space, for CnnPolicy and "
                                "MultiInputPolicy)")
        self.vec = vec
        self._layout = vec.obs_layout
        self._leaves = _sb3_leaves(vec.obs_layout) if observations == "leaves" else None
        self._as_floats = self._leaves is None and vec.obs_layout.is_bytes
        obs_space: spaces.Space = vec.single_observation_space
        if self._leaves is not None:
            obs_space = (self._leaves[0][2] if len(self._leaves) == 1 and not self._leaves[0][1].path
                         else spaces.Dict({key: space for key, _, space, _ in self._leaves}))
        elif self._as_floats:
            width = sum(leaf.size for leaf in vec.obs_layout.leaves)
            obs_space = spaces.Box(-np.inf, np.inf, (width,), np.float32)
        self._obs_space = obs_space
        self._actions: np.ndarray | None = None
        self._reset_seed: int | None = None
        self._start = time.time()
        self._live = np.zeros(vec.num_agents, bool)  # masks of the last result
        super().__init__(vec.num_agents, obs_space, vec.single_action_space)

    # ---- observations ------------------------------------------------------------------------------------------

    def _zero_obs(self) -> np.ndarray | dict[str, np.ndarray]:
        """The observation of a padded slot: zeros of the observation space (a fresh copy)."""
        if isinstance(self._obs_space, spaces.Dict):
            return {key: np.zeros(space.shape, space.dtype) for key, space in self._obs_space.spaces.items()}
        return np.zeros(self._obs_space.shape, self._obs_space.dtype)

    def _obs(self, rows: np.ndarray, live: np.ndarray | None = None) -> np.ndarray | dict[str, np.ndarray]:
        """Rows ``[R, flat]`` (or one row ``[flat]``) in SB3's observation form: a copy. ``live`` (bool ``[R]``)
        marks the rows of live agents: the others are padding, zeros in every form."""
        if not self._as_floats and self._leaves is None:
            return np.array(rows, copy=True)
        one = rows.ndim == 1
        views = unflatten(self._layout, rows[None] if one else rows)
        n = 1 if one else len(rows)
        if self._leaves is not None:
            out_leaves = {}
            for key, leaf, space, offset in self._leaves:
                value = np.asarray(functools.reduce(operator.getitem, leaf.path, views))
                value = (value - offset if offset is not None else value).astype(space.dtype, copy=True)
                if offset is not None and live is not None:
                    value[~live] = 0  # a padded row is zeros: unshifted, not 0 - start
                out_leaves[key] = value[0] if one else value
            if not isinstance(self._obs_space, spaces.Dict):
                return out_leaves[self._leaves[0][0]]
            return out_leaves
        columns = [np.asarray(functools.reduce(operator.getitem, leaf.path, views), np.float32).reshape(n, -1)
                   for leaf in self._layout.leaves]
        out = np.concatenate(columns, axis=1)
        return out[0] if one else out

    # ---- stepping ----------------------------------------------------------------------------------------------

    def reset(self) -> np.ndarray:
        """Reset every env (with the seed of the last :meth:`seed` call, once); returns ``obs`` ``[num_envs, ...]``."""
        obs, infos = self.vec.reset(seed=self._reset_seed)
        self._reset_seed = None
        self._live = self.vec.masks.copy()
        self.reset_infos = [dict(info) for info in infos]
        return self._obs(obs, self._live)

    def step_async(self, actions: np.ndarray) -> None:
        """Keep ``actions`` ``[num_envs, *action_shape]`` for :meth:`step_wait`; rows of padded slots are ignored."""
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """Step every env; returns ``(obs, rewards float32[num_envs], dones bool[num_envs], infos)``."""
        if self._actions is None:
            raise APIUsageError("step_wait() called without step_async(actions)")
        actions, self._actions = self._actions, None
        obs, rewards, terminals, truncations, infos = self.vec.step(actions)
        dones = terminals | truncations
        out_infos: list[dict[str, Any]] = []
        for k, info in enumerate(infos):
            if "final_observation" in info:
                out_infos.append(self._episode_end(info, bool(terminals[k]), bool(truncations[k])))
                continue
            out = {key: value for key, value in info.items() if key != "reset_info"}
            if "reset_info" in info and not self._live[k] and not dones[k]:
                # A padding segment ends with its env's episode (see the module docstring).
                dones[k] = True
                out["terminal_observation"] = self._zero_obs()
                out["TimeLimit.truncated"] = False
            out_infos.append(out)
        self._live = self.vec.masks.copy()
        return self._obs(obs, self._live), rewards.copy(), dones, out_infos

    def _episode_end(self, info: dict[str, Any], terminal: bool, truncated: bool) -> dict[str, Any]:
        out = {key: value for key, value in info.items() if key not in ("final_observation", "episode", "reset_info")}
        out["terminal_observation"] = self._obs(np.asarray(info["final_observation"]))
        out["TimeLimit.truncated"] = truncated and not terminal
        episode = info.get("episode")
        if episode is not None:
            out["episode"] = {"r": float(episode["return"]), "l": int(episode["length"]),
                              "t": round(time.time() - self._start, 6)}
        return out

    def close(self) -> None:
        """Close the shoal vector env (workers, shared memory, envs)."""
        self.vec.close()

    # ---- action masks ------------------------------------------------------------------------------------------

    def action_masks(self) -> np.ndarray:
        """Legal actions of every index for the last result: ``bool[num_envs, sum(nvec)]``.

        Rows of padded slots allow only the first choice (of each component), see the module docstring.

        Raises:
            NotImplementedError: continuous actions have no masks.
            APIUsageError: called before :meth:`reset`.
        """
        masks = self.vec.action_masks
        if masks is None:
            if self.vec.action_layout.kind == "continuous":
                raise NotImplementedError(f"action_masks(): the action space {self.action_space!r} is "
                                          "continuous and has no action masks")
            raise APIUsageError("action_masks() called before reset()")
        masks = masks.copy()
        padded = ~self.vec.masks
        if padded.any():
            nvec = self.vec.action_layout.nvec
            firsts = np.concatenate([[0], np.cumsum(nvec)[:-1]])
            masks[padded] = False
            masks[np.ix_(np.flatnonzero(padded), firsts)] = True
        return masks

    # ---- env access --------------------------------------------------------------------------------------------

    def _indices(self, indices: VecEnvIndices) -> list[int]:
        chosen = list(self._get_indices(indices))
        for k in chosen:
            if not 0 <= k < self.num_envs:
                raise IndexError(f"env index {k} is out of range: this SB3VecEnv has {self.num_envs} indices "
                                 f"({self.vec.num_envs} envs x {self.vec.agents_per_env} agent slots)")
        return chosen

    def _envs(self, indices: VecEnvIndices, what: str) -> list[Any]:
        """The env each of ``indices`` belongs to (the env the emulator wraps), on the serial backend."""
        if not isinstance(self.vec, SerialVecEnv):
            raise NotImplementedError(
                f"{what} needs the envs in this process, but the {self.vec.backend!r} backend keeps them in other "
                "processes (shoal steps them there and does not call into them). Make the vector env with "
                "backend='serial' to reach the envs, or configure them in their constructor")
        emulators = self.vec.emulators
        return [emulators[k // self.vec.agents_per_env].env for k in self._indices(indices)]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """The attribute ``attr_name`` of each index's env (serial backend; ``"render_mode"`` everywhere)."""
        if attr_name == "action_masks":
            return [self.action_masks] * len(self._indices(indices))
        if attr_name == "render_mode":  # None (no rendering) for envs that do not say, and off the serial backend
            if not isinstance(self.vec, SerialVecEnv):
                return [None] * len(self._indices(indices))
            return [getattr(env, "render_mode", None) for env in self._envs(indices, "get_attr('render_mode')")]
        return [_wrapper_attr(env, attr_name) for env in self._envs(indices, f"get_attr({attr_name!r})")]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set ``attr_name`` on each index's env (serial backend)."""
        if attr_name in _OWN_ATTRS:
            raise APIUsageError(f"set_attr({attr_name!r}): the bridge computes {attr_name!r} itself")
        for env in self._envs(indices, f"set_attr({attr_name!r})"):
            if isinstance(env, gym.Env):
                env.set_wrapper_attr(attr_name, value)
            else:
                setattr(env, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        """Call ``method_name`` on each index's env (serial backend).

        ``env_method("action_masks")`` (what sb3-contrib's ``MaskablePPO`` calls) returns each index's row of
        :meth:`action_masks` on every backend.
        """
        if method_name == "action_masks":
            masks = self.action_masks()
            return [masks[k] for k in self._indices(indices)]
        envs = self._envs(indices, f"env_method({method_name!r})")
        return [_wrapper_attr(env, method_name)(*method_args, **method_kwargs) for env in envs]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """Whether each index's env is wrapped in ``wrapper_class``.

        ``Monitor`` (or a subclass): True on every backend, as the bridge reports SB3's ``info["episode"]`` itself
        (so ``evaluate_policy``, ``EvalCallback`` and ``VecMonitor`` count real episodes, never padding ends).
        Other wrappers: looked up in the envs on the serial backend (False for PettingZoo envs, which are not
        Gymnasium wrappers), False elsewhere (the envs live in other processes).
        """
        count = len(self._indices(indices))
        if issubclass(wrapper_class, Monitor):
            return [True] * count
        if not isinstance(self.vec, SerialVecEnv):
            return [False] * count
        return [isinstance(env, gym.Env) and is_wrapped(env, wrapper_class)
                for env in self._envs(indices, f"env_is_wrapped({wrapper_class.__name__})")]

    def has_attr(self, attr_name: str) -> bool:
        """True when :meth:`get_attr` can answer ``attr_name``; ``"action_masks"`` for discrete actions only."""
        if attr_name == "action_masks":
            return self.vec.action_layout.kind in ("discrete", "multi_discrete")
        if attr_name == "render_mode":
            return True
        if not isinstance(self.vec, SerialVecEnv):
            return False
        return super().has_attr(attr_name)

    def get_images(self) -> Sequence[np.ndarray | None]:
        """``env.render()`` of each index's env (serial backend; the envs need ``render_mode="rgb_array"``)."""
        return [env.render() for env in self._envs(None, "render()")]

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """Seed the next :meth:`reset`: env ``e`` gets ``seed + e``, as on every shoal vector env.

        Returns:
            the seed of each index's env (indices of one env share its seed).
        """
        if seed is None:
            seed = int(np.random.randint(0, np.iinfo(np.uint32).max - self.vec.num_envs, dtype=np.uint32))
        self._reset_seed = int(seed)
        return [self._reset_seed + k // self.vec.agents_per_env for k in range(self.num_envs)]

    def set_options(self, options: list[dict] | dict | None = None) -> None:
        """Reset options are not supported: shoal resets envs without options. Empty options are accepted."""
        given = options if isinstance(options, list) else [options]
        if any(given):
            raise NotImplementedError("set_options(): shoal vector envs reset without options; configure the env "
                                      "in its constructor instead (the env_fn given to shoal.vector.make)")

    def __enter__(self) -> SB3VecEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SB3VecEnv({self.vec!r})"


def _sb3_leaves(layout: Layout) -> list[tuple[str, Leaf, spaces.Space, np.ndarray | None]]:
    """``(key, leaf, SB3 space, offset to subtract)`` for every leaf of ``layout``, or a clear error for a leaf
    SB3 has no space for."""
    out: list[tuple[str, Leaf, spaces.Space, np.ndarray | None]] = []
    refuse = ("to_sb3(vec, observations='leaves'): the observation leaf at {path} {why}; use observations='flat' "
              "(every leaf as float columns)")
    for leaf in layout.leaves:
        space, offset = leaf.space, None
        path = format_path(leaf.path)
        if leaf.source is not None or leaf.kind == "text":
            raise APIUsageError(refuse.format(path=path, why=f"({type(leaf.source or space).__name__}) has no "
                                              "Stable-Baselines3 space"))
        if any("." in str(key) or "/" in str(key) for key in leaf.path):
            raise APIUsageError(refuse.format(path=path, why="has a key with '.' or '/', which SB3's Dict "
                                              "features cannot name"))
        if isinstance(space, spaces.MultiDiscrete) and space.nvec.ndim != 1:
            raise APIUsageError(refuse.format(path=path, why=f"is a {space.nvec.ndim}-D MultiDiscrete, which SB3 "
                                              "does not encode"))
        if isinstance(space, spaces.Discrete) and space.start != 0:
            space, offset = spaces.Discrete(int(space.n)), np.asarray(space.start, np.int64)
        elif isinstance(space, spaces.MultiDiscrete) and np.any(space.start != 0):
            space, offset = spaces.MultiDiscrete(space.nvec), np.asarray(space.start, np.int64)
        out.append(("/".join(str(key) for key in leaf.path) or "obs", leaf, space, offset))
    return out


def _wrapper_attr(env: Any, name: str) -> Any:
    """``name`` of ``env``, looked up through Gymnasium wrappers as SB3's own vector envs do."""
    if isinstance(env, gym.Env):
        return env.get_wrapper_attr(name)
    return getattr(env, name)
