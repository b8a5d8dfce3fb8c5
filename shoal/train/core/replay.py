"""Replay storage for off-policy learning: each agent slot's decisions, completed into transitions.

A transition is one decision of one agent slot and what followed until that slot's next decision:
``(obs, action, reward, next_obs, terminal)``. :class:`ReplayBuffer` holds, per vector row, the decision waiting
for its outcome (rewards add up while the slot waits, e.g. for its turn in a turn-based game) and a ring of
completed transitions:

* a transition completes when its slot acts again (``next_obs`` is that observation, its legal-action mask the
  next mask), or when the slot's episode ends: terminated (``terminal=True``, nothing to bootstrap from) or
  truncated (``next_obs`` is the env's final observation, and the learner bootstraps from it);
* padded and dead slots never decided anything, so they store nothing;
* with ``n_step > 1`` a slot's consecutive transitions are joined: the stored reward is
  ``r_t + gamma r_{t+1} + ... + gamma^(k-1) r_{t+k-1}`` over ``k = n_step`` decisions (fewer at the episode's end),
  the next observation the one ``k`` decisions later, and the discount to bootstrap with ``gamma^k``;
* observations are stored once per transition as flat rows of the layout's dtype (mixed-dtype rows stay bytes),
  plus the next observation: memory is ``capacity * (2 * row_bytes + ...)``, reported by :attr:`nbytes`;
* with a centralized critic (``critic_width > 0``) each transition also holds the critic's float32 input at the
  decision and at the next one (at the episode's final step when truncated): ``capacity * 2 * critic_width * 4``
  bytes more, counted in :attr:`nbytes` too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["ReplayBatch", "ReplayBuffer"]


@dataclass
class ReplayBatch:
    """A sampled minibatch of ``N`` transitions (tensors on the learner's device).

    Attributes:
        obs, next_obs: flat rows ``[N, flat_size]`` of the layout's dtype.
        actions: flat actions ``[N, *flat_action_shape]`` as the env received them.
        rewards: float32 ``[N]``, summed over the steps between the slot's two decisions (discounted over
            ``n_step`` decisions).
        terminals: float32 ``[N]``: 1 where the episode terminated (no bootstrap), else 0.
        discounts: float32 ``[N]``: the factor of the bootstrapped value, ``gamma^k`` for ``k`` joined decisions.
        action_masks, next_action_masks: bool ``[N, W]`` legal actions at ``obs`` / ``next_obs``, or None.
        agent_ids: int64 ``[N]``: the slot of each transition in its env.
        critic_obs, next_critic_obs: float32 ``[N, C]`` centralized critic inputs at ``obs`` / ``next_obs``, or
            None (the critics read the observations).
    """

    obs: Tensor
    actions: Tensor
    rewards: Tensor
    next_obs: Tensor
    terminals: Tensor
    discounts: Tensor
    action_masks: Tensor | None
    next_action_masks: Tensor | None
    agent_ids: Tensor
    critic_obs: Tensor | None = None
    next_critic_obs: Tensor | None = None


class ReplayBuffer:
    """A ring of ``capacity`` transitions plus one pending decision per vector row (see the module docstring).

    Args:
        capacity: transitions kept (the oldest are overwritten).
        num_rows: rows of the vector env (``num_envs * agents_per_env``).
        agents_per_env: slots per env (a row's agent id is ``row % agents_per_env``).
        obs_width, obs_dtype: flat observation rows.
        action_shape, action_dtype: flat actions of one row.
        mask_width: width of legal-action masks (0: no masks).
        gamma: the discount (stored per transition as ``gamma^k``).
        n_step: decisions joined into one transition (1: plain one-step transitions).
        critic_width: width ``C`` of a centralized critic input stored beside each decision (0: none).
    """

    _RING = ("obs", "actions", "rewards", "next_obs", "terminals", "discounts", "action_masks", "next_action_masks",
             "agent_ids", "critic_obs", "next_critic_obs")
    _PENDING = ("p_obs", "p_actions", "p_rewards", "p_masks", "pending", "c_obs", "c_actions", "c_rewards", "c_masks",
                "c_length", "p_critic", "c_critic")

    def __init__(self, capacity: int, num_rows: int, agents_per_env: int, obs_width: int, obs_dtype: Any,
                 action_shape: tuple[int, ...], action_dtype: Any, mask_width: int, *, gamma: float = 0.99,
                 n_step: int = 1, critic_width: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        if n_step < 1:
            raise ValueError(f"n_step must be >= 1, got {n_step}")
        if critic_width < 0:
            raise ValueError(f"critic_width must be >= 0, got {critic_width}")
        self.critic_width = critic_width
        self.capacity = capacity
        self.gamma = gamma
        self.n_step = n_step
        self.agents_per_env = agents_per_env
        self.mask_width = mask_width
        self.obs = np.zeros((capacity, obs_width), obs_dtype)
        self.next_obs = np.zeros((capacity, obs_width), obs_dtype)
        self.actions = np.zeros((capacity, *action_shape), action_dtype)
        self.rewards = np.zeros(capacity, np.float32)
        self.terminals = np.zeros(capacity, np.float32)
        self.discounts = np.zeros(capacity, np.float32)
        # zeros: pages untouched until written (every stored row writes its masks)
        self.action_masks = np.zeros((capacity, mask_width), np.bool_) if mask_width else None
        self.next_action_masks = np.zeros((capacity, mask_width), np.bool_) if mask_width else None
        self.agent_ids = np.zeros(capacity, np.int64)
        self.critic_obs = np.zeros((capacity, critic_width), np.float32) if critic_width else None
        self.next_critic_obs = np.zeros((capacity, critic_width), np.float32) if critic_width else None
        self.size = 0
        self.position = 0
        self.added = 0  # transitions ever completed
        # the decision of each row that waits for its outcome
        self.p_obs = np.zeros((num_rows, obs_width), obs_dtype)
        self.p_actions = np.zeros((num_rows, *action_shape), action_dtype)
        self.p_rewards = np.zeros(num_rows, np.float32)
        self.p_masks = np.ones((num_rows, mask_width), np.bool_) if mask_width else None
        self.pending = np.zeros(num_rows, np.bool_)
        self.p_critic = np.zeros((num_rows, critic_width), np.float32) if critic_width else None
        # n_step > 1: each row's last transitions not joined yet (one-step rewards)
        chain = n_step - 1
        self.c_obs = np.zeros((num_rows, chain, obs_width), obs_dtype) if chain else None
        self.c_actions = np.zeros((num_rows, chain, *action_shape), action_dtype) if chain else None
        self.c_rewards = np.zeros((num_rows, chain), np.float32) if chain else None
        self.c_masks = np.ones((num_rows, chain, mask_width), np.bool_) if chain and mask_width else None
        self.c_length = np.zeros(num_rows, np.int64) if chain else None
        self.c_critic = np.zeros((num_rows, chain, critic_width), np.float32) if chain and critic_width else None

    @property
    def nbytes(self) -> int:
        """Bytes held by the ring (allocated up front)."""
        return sum(getattr(self, name).nbytes for name in self._RING if getattr(self, name) is not None)

    def act(self, rows: np.ndarray, obs: np.ndarray, actions: np.ndarray, action_masks: np.ndarray | None,
            critic_obs: np.ndarray | None = None) -> None:
        """Record the decisions of ``rows`` (int64 ``[B]``): observations ``[B, flat]``, env actions, masks, and
        with ``critic_width`` the critic inputs float32 ``[B, C]`` (required then)."""
        if self.p_critic is not None:
            if critic_obs is None:
                raise ValueError("this replay buffer stores critic inputs: pass critic_obs to act()")
            self.p_critic[rows] = critic_obs
        self.p_obs[rows] = obs
        self.p_actions[rows] = actions
        self.p_rewards[rows] = 0.0
        if self.p_masks is not None:
            self.p_masks[rows] = True if action_masks is None else action_masks
        self.pending[rows] = True

    def finish(self, rows: np.ndarray, rewards: np.ndarray, terminals: np.ndarray, truncations: np.ndarray,
               live: np.ndarray, obs: np.ndarray, action_masks: np.ndarray | None,
               final_obs: dict[int, np.ndarray], critic_obs: np.ndarray | None = None,
               final_critic: dict[int, np.ndarray] | None = None) -> int:
        """Apply an env result to the pending decisions of ``rows``; returns the transitions completed.

        Args:
            rows: int64 ``[B]`` rows of the result; ``rewards`` float32, ``terminals``/``truncations``/``live``
                bool ``[B]`` (``live``: the slot must act now); ``obs`` ``[B, flat]``; ``action_masks`` bool
                ``[B, W]`` or None.
            final_obs: for each position ``k`` of a truncated (not terminated) row with a pending decision, the
                episode's final observation ``[flat]``.
            critic_obs: with ``critic_width``: float32 ``[B, C]``, the critic inputs of the result's rows.
            final_critic: with ``critic_width``: for the positions of ``final_obs``, the critic input at the
                episode's final step ``[C]``.
        """
        pending = self.pending[rows]
        if not pending.any():
            return 0
        self.p_rewards[rows[pending]] += rewards[pending]
        ended = terminals | truncations
        complete = pending & (ended | live)
        picks = np.flatnonzero(complete)
        if not len(picks):
            return 0
        done_rows = rows[picks]
        next_obs = np.array(obs[picks], copy=True)
        for j, k in enumerate(picks):
            if truncations[k] and not terminals[k]:
                try:
                    next_obs[j] = final_obs[int(k)]
                except KeyError:
                    raise RuntimeError(f"internal error: row {int(rows[k])} was truncated with a pending decision "
                                       "but no final observation was given") from None
        next_critic = None
        if self.critic_width:
            if critic_obs is None:
                raise ValueError("this replay buffer stores critic inputs: pass critic_obs to finish()")
            next_critic = np.array(critic_obs[picks], copy=True)
            for j, k in enumerate(picks):
                if truncations[k] and not terminals[k]:
                    try:
                        next_critic[j] = (final_critic or {})[int(k)]
                    except KeyError:
                        raise RuntimeError(f"internal error: row {int(rows[k])} was truncated with a pending "
                                           "decision but no final critic input was given") from None
        next_masks = None
        if self.mask_width:
            next_masks = np.ones((len(picks), self.mask_width), np.bool_)
            if action_masks is not None:
                # no mask is reported with a final observation: an ended episode's next mask is all legal (a
                # truncated one bootstraps its soft value over every action)
                keep = ~ended[picks]
                next_masks[keep] = action_masks[picks[keep]]
        if self.n_step == 1:
            self._add(self.p_obs[done_rows], self.p_actions[done_rows], self.p_rewards[done_rows], next_obs,
                      terminals[picks], np.full(len(picks), self.gamma, np.float32),
                      None if self.p_masks is None else self.p_masks[done_rows], next_masks, done_rows,
                      None if self.p_critic is None else self.p_critic[done_rows], next_critic)
        else:
            for j, row in enumerate(done_rows):
                self._join(int(row), next_obs[j], bool(terminals[picks[j]]), bool(ended[picks[j]]),
                           None if next_masks is None else next_masks[j],
                           None if next_critic is None else next_critic[j])
        self.pending[done_rows] = False
        return len(picks)

    def _join(self, row: int, next_obs: np.ndarray, terminal: bool, ended: bool, next_mask: np.ndarray | None,
              next_critic: np.ndarray | None = None) -> None:
        """n-step: append ``row``'s completed decision to its chain; store the joined transitions that are due
        (the oldest once ``n_step`` decisions are joined; all of them when the episode ended)."""
        length = int(self.c_length[row])
        obs = np.concatenate([self.c_obs[row, :length], self.p_obs[row][None]])
        actions = np.concatenate([self.c_actions[row, :length], self.p_actions[row][None]])
        rewards = np.concatenate([self.c_rewards[row, :length], self.p_rewards[row : row + 1]])
        masks = None
        if self.c_masks is not None:
            masks = np.concatenate([self.c_masks[row, :length], self.p_masks[row][None]])
        critic = None
        if self.c_critic is not None:
            critic = np.concatenate([self.c_critic[row, :length], self.p_critic[row][None]])
        count = length + 1
        due = count if ended else count - self.n_step + 1  # how many of the oldest transitions to store
        if due > 0:
            powers = self.gamma ** np.arange(count, dtype=np.float64)
            joined = np.array([np.dot(powers[: count - i], rewards[i:]) for i in range(due)], np.float32)
            discounts = (self.gamma ** (count - np.arange(due))).astype(np.float32)
            self._add(obs[:due], actions[:due], joined, np.repeat(next_obs[None], due, 0),
                      np.full(due, terminal, np.float32), discounts, None if masks is None else masks[:due],
                      None if next_mask is None else np.repeat(next_mask[None], due, 0), np.full(due, row),
                      None if critic is None else critic[:due],
                      None if next_critic is None else np.repeat(next_critic[None], due, 0))
        keep = 0 if ended else count - max(due, 0)
        start = count - keep
        self.c_obs[row, :keep] = obs[start:]
        self.c_actions[row, :keep] = actions[start:]
        self.c_rewards[row, :keep] = rewards[start:]
        if self.c_masks is not None:
            self.c_masks[row, :keep] = masks[start:]
        if self.c_critic is not None:
            self.c_critic[row, :keep] = critic[start:]
        self.c_length[row] = keep

    def _add(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
             terminals: np.ndarray, discounts: np.ndarray, masks: np.ndarray | None, next_masks: np.ndarray | None,
             rows: np.ndarray, critic: np.ndarray | None = None, next_critic: np.ndarray | None = None) -> None:
        n = len(rows)
        if n > self.capacity:  # only the newest fit
            keep = slice(n - self.capacity, n)
            obs, actions, rewards, next_obs = obs[keep], actions[keep], rewards[keep], next_obs[keep]
            terminals, discounts, rows = terminals[keep], discounts[keep], rows[keep]
            masks = None if masks is None else masks[keep]
            next_masks = None if next_masks is None else next_masks[keep]
            critic = None if critic is None else critic[keep]
            next_critic = None if next_critic is None else next_critic[keep]
            n = self.capacity
        index = (self.position + np.arange(n)) % self.capacity
        self.obs[index] = obs
        self.actions[index] = actions
        self.rewards[index] = rewards
        self.next_obs[index] = next_obs
        self.terminals[index] = terminals
        self.discounts[index] = discounts
        if self.action_masks is not None:
            self.action_masks[index] = masks
            self.next_action_masks[index] = next_masks
        if self.critic_obs is not None:
            self.critic_obs[index] = critic
            self.next_critic_obs[index] = next_critic
        self.agent_ids[index] = rows % self.agents_per_env
        self.position = int((self.position + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)
        self.added += n

    def sample(self, batch_size: int, generator: torch.Generator, device: torch.device) -> ReplayBatch:
        """``batch_size`` transitions drawn uniformly (with replacement) by ``generator``."""
        if self.size == 0:
            raise RuntimeError("cannot sample an empty replay buffer")
        index = torch.randint(self.size, (batch_size,), generator=generator).numpy()

        def take(array: np.ndarray | None) -> Tensor | None:
            if array is None:
                return None
            return torch.from_numpy(array[index]).to(device, non_blocking=True)

        return ReplayBatch(take(self.obs), take(self.actions), take(self.rewards), take(self.next_obs),
                           take(self.terminals), take(self.discounts), take(self.action_masks),
                           take(self.next_action_masks), take(self.agent_ids), take(self.critic_obs),
                           take(self.next_critic_obs))

    # ---- checkpoints --------------------------------------------------------------------------------------

    def carry_state(self) -> dict[str, Any]:
        """The pending decisions and n-step chains (the rollout carry-over of a checkpoint)."""
        return {name: None if getattr(self, name) is None else getattr(self, name).copy() for name in self._PENDING}

    def load_carry_state(self, state: dict[str, Any]) -> None:
        for name in self._PENDING:
            if state.get(name) is not None:
                getattr(self, name)[...] = state[name]

    def state_dict(self) -> dict[str, Any]:
        """The stored transitions (views of the filled part: copy them before changing the buffer) and the
        ring's position."""
        size = self.size
        return {"size": size, "position": self.position, "added": self.added, "capacity": self.capacity,
                **{name: None if getattr(self, name) is None else getattr(self, name)[:size]
                   for name in self._RING}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"the saved replay buffer holds up to {state['capacity']} transitions, this one "
                             f"{self.capacity}")
        size = int(state["size"])
        for name in self._RING:
            if getattr(self, name) is not None:
                if state.get(name) is None:
                    raise ValueError(f"the saved replay buffer holds no {name!r}: it was saved by a run with another "
                                     "critic input")
                getattr(self, name)[:size] = state[name]
        self.size, self.position, self.added = size, int(state["position"]), int(state["added"])
