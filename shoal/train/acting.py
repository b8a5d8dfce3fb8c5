"""Acting: one way to run a policy on rows of a vector env, for rollouts, evaluation and league opponents.

A :class:`RowActor` owns what acting needs besides the observations: the LSTM state of every vector row (zeroed
where an episode starts, advanced only for the rows that acted), or for a sequence policy (``is_sequence``, the
Decision Transformer) each row's context of its last steps (emptied where an episode starts, extended only by the
rows that acted, its return-to-go lowered by the rewards every row receives), the agent-id of each row (its slot in its
env), legal-action masks (dropped when every action is legal, so the policy skips masking) and the clipping of
continuous actions to the action space (the unclipped action is kept for the learner).

The forward pass itself is :class:`~shoal.train.speed.traced_acting.Actor`'s: replayed through verified
TorchScript traces when asked, else eager (a centralized critic input, MAPPO's, is one more traced input);
deterministic actions always run eagerly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from shoal.train.speed.traced_acting import Actor

__all__ = ["Acted", "RowActor"]


@dataclass
class Acted:
    """What :meth:`RowActor.act` returns for ``B`` rows.

    Attributes:
        env_actions: actions for the env, ``[B, *flat_action_shape]`` (continuous ones clipped to the space).
        actions: the sampled actions as the learner sees them (unclipped).
        log_probs, values: float32 ``[B]`` (``values`` None when the critic needs a centralized input that was
            not given, e.g. evaluating a MAPPO policy).
        state_before: the LSTM state ``(h, c)`` the rows acted from, float32 ``[B, lstm_size]`` each (None without
            an LSTM).
    """

    env_actions: np.ndarray
    actions: np.ndarray
    log_probs: np.ndarray
    values: np.ndarray | None
    state_before: tuple[np.ndarray, np.ndarray] | None


class RowActor:
    """Runs ``policy`` on rows of a vector env of ``num_rows`` rows (``agents_per_env`` per env).

    Args:
        policy: the policy (the :class:`~shoal.policies.Policy` forward contract).
        num_rows, agents_per_env: the vector env's rows and slots per env.
        device: where the policy runs.
        continuous: the action layout has continuous entries (actions are clipped for the env).
        deterministic: take the most likely action (evaluation) instead of sampling.
        trace: replay verified TorchScript traces of the acting pass (sampling only).
        target_return: the return a sequence policy conditions on (None: the policy's own default, if it has
            one); ignored by other policies.
    """

    def __init__(self, policy: nn.Module, num_rows: int, agents_per_env: int, device: torch.device | str, *,
                 continuous: bool, deterministic: bool = False, trace: bool = False,
                 target_return: float | None = None) -> None:
        self.policy = policy
        self.device = torch.device(device)
        self.num_rows = num_rows
        self.agents_per_env = agents_per_env
        self.continuous = continuous
        self.deterministic = deterministic
        self.forward = Actor(policy, trace=trace and not deterministic)
        self.use_ids = bool(getattr(policy, "num_agent_ids", 0))
        self._every_rows: np.ndarray | None = None  # the last array found to hold every row in order (not mutated)
        recurrent = bool(getattr(policy, "is_recurrent", False))
        self.state: tuple[Tensor, Tensor] | None = policy.initial_state(num_rows, self.device) if recurrent else None
        #: a sequence policy's per-row context (e.g. :class:`~shoal.policies.decision_transformer.TokenContext`)
        self.context: Any = None
        if getattr(policy, "is_sequence", False):
            self.context = policy.initial_context(num_rows, self.device, target_return)

    def _tensor(self, array: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device, non_blocking=True)

    def act(self, obs: np.ndarray, rows: np.ndarray, live: np.ndarray | None = None, *,
            starts: np.ndarray | None = None, action_masks: np.ndarray | None = None,
            critic_obs: Tensor | None = None, rewards: np.ndarray | None = None) -> Acted:
        """Actions for ``rows``.

        Args:
            obs: flat observations ``[B, flat_size]`` of ``rows`` (int64 ``[B]``, distinct).
            live: bool ``[B]``: the rows whose LSTM state advances (None: all of them). Every row is run (a fixed
                batch shape reuses traces); the caller ignores the others' actions.
            starts: bool ``[B]``: an episode starts at this step (the LSTM state is zeroed first); needed with an
                LSTM.
            action_masks: bool ``[B, W]`` legal actions, or None.
            critic_obs: float ``[B, C]`` centralized critic inputs (MAPPO), or None.
            rewards: float32 ``[B]``: the rewards the rows received from the previous step (the env's last
                result); needed with a sequence policy, whose return-to-go they lower.
        """
        if self.context is not None:
            return self._act_in_context(obs, rows, live, starts, action_masks, rewards)
        # Every row, in order (then rows == 0..n-1)? Callers pass the same array each step: check it once.
        every = rows is self._every_rows
        if not every and len(rows) == self.num_rows and bool((rows[1:] > rows[:-1]).all()):
            every, self._every_rows = True, rows
        state = done = index = None
        if self.state is not None:
            if starts is None:
                raise ValueError("RowActor.act of a recurrent policy needs starts (episode starts of the rows)")
            if every:
                state = self.state
            else:
                index = self._tensor(rows)
                state = (self.state[0][:, index], self.state[1][:, index])
            done = self._tensor(starts)
        masks = None if action_masks is None or action_masks.all() else self._tensor(action_masks)
        ids = self._tensor(rows % self.agents_per_env) if self.use_ids else None
        obs_t = self._tensor(obs)
        if not self.deterministic:
            action, log_prob, value, new_state = self.forward(obs_t, state, done, masks, ids, critic_obs)
        else:
            with torch.inference_mode():
                out = self.policy(obs_t, state, done=done, action_masks=masks, agent_ids=ids,
                                  critic_obs=critic_obs, deterministic=self.deterministic)
            action, log_prob, value, new_state = out.action, out.log_prob, out.value, out.state
        env_actions = (self.policy.clip_action(action) if self.continuous else action).cpu().numpy()
        actions = action.cpu().numpy() if self.continuous or action.device.type != "cpu" else env_actions
        state_before = None
        if state is not None:
            state_before = (state[0][0].cpu().numpy(), state[1][0].cpu().numpy())
        if new_state is not None:
            self._advance(rows, every, index, live, new_state)
        values = None if value is None else value.float().cpu().numpy()
        return Acted(env_actions, actions, log_prob.float().cpu().numpy(), values, state_before)

    def _act_in_context(self, obs: np.ndarray, rows: np.ndarray, live: np.ndarray | None,
                        starts: np.ndarray | None, action_masks: np.ndarray | None,
                        rewards: np.ndarray | None) -> Acted:
        """A sequence policy's step: its context holds each row's last steps (see :meth:`act`)."""
        if starts is None or rewards is None:
            raise ValueError("RowActor.act of a sequence policy needs starts (episode starts of the rows) and "
                             "rewards (what they received from the previous step)")
        masks = None if action_masks is None or action_masks.all() else self._tensor(action_masks)
        with torch.inference_mode():
            action, log_prob = self.context.act(
                self._tensor(np.asarray(rows, np.int64)), self._tensor(obs), self._tensor(starts),
                self._tensor(np.asarray(rewards, np.float32)), None if live is None else self._tensor(live),
                masks, deterministic=self.deterministic)
        env_actions = (self.policy.clip_action(action) if self.continuous else action).cpu().numpy()
        actions = action.cpu().numpy() if self.continuous else env_actions
        return Acted(env_actions, actions, log_prob.float().cpu().numpy(), None, None)

    def _advance(self, rows: np.ndarray, every: bool, index: Tensor | None, live: np.ndarray | None,
                 new_state: tuple[Tensor, Tensor]) -> None:
        """Store the new LSTM state of the rows that acted (``live``; all when None)."""
        assert self.state is not None
        if live is None or live.all():
            if every:
                self.state = new_state
                return
            target, source = index, slice(None)
        elif live.any():
            picked = np.flatnonzero(live)
            target, source = self._tensor(rows[picked]), self._tensor(picked)
        else:
            return
        with torch.inference_mode():
            self.state[0][:, target] = new_state[0][:, source]
            self.state[1][:, target] = new_state[1][:, source]

    def rows_state(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The LSTM state of ``rows`` as numpy ``(h, c)``, float32 ``[len(rows), lstm_size]`` each (None without
        an LSTM)."""
        if self.state is None:
            return None
        index = self._tensor(np.asarray(rows, np.int64))
        return self.state[0][0, index].cpu().numpy(), self.state[1][0, index].cpu().numpy()

    def set_rows_state(self, rows: np.ndarray, state: tuple[np.ndarray, np.ndarray]) -> None:
        """Write ``(h, c)`` float32 ``[len(rows), lstm_size]`` into the LSTM state of ``rows``."""
        if self.state is None:
            return
        index = self._tensor(np.asarray(rows, np.int64))
        with torch.inference_mode():
            self.state[0][0, index] = torch.as_tensor(state[0], device=self.device)
            self.state[1][0, index] = torch.as_tensor(state[1], device=self.device)
