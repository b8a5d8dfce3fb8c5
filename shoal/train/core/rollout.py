"""RolloutBuffer: the transitions of one update, as segments x horizon per agent slot.

Slot semantics (docs/data-contract.md) decide what a transition is. When the live agent of vector row ``r`` acts, its
observation, action, log-prob, value (and, at a segment start, the LSTM state before the step) are written at
the row's next position in its current segment: a run of ``horizon`` consecutive actions of that one slot. The
transition stays *pending* until the env's outcome arrives, at the next result in which ``masks[r]``,
``terminals[r]`` or ``truncations[r]`` is True (rewards delivered in between are summed into it); only then is
it valid. Rows that are not live (dead, waiting, padded) write nothing, so they never reach the learner.

Bootstrapping: a transition's next value is the value of the row's next action, which is simply the next entry
of its segment; 0 after a termination; the value of ``infos[r]["final_observation"]`` after a truncation. The
last valid step of a segment bootstraps from the segment's ``boot`` value: the value the row computes when it
next acts (a pending action, or :meth:`RolloutBuffer.bootstrap` at the end of the rollout). The advantage
trace is cut there. Pending actions still waiting for their outcome when a rollout ends move to the start of
the next rollout's segments.

When every row acts and completes at every step (single-agent and fully parallel envs) all rows advance in
lockstep through one block of segments, and the buffer writes with plain slices.

Per rollout::

    buffer.begin()
    while not buffer.full:
        buffer.act(rows, ...)                       # rows whose agents acted
        buffer.finish(rows, rewards, ...)           # the env answered for these rows
    buffer.bootstrap(buffer.waiting_rows(), values) # rows that still owe a next value
    data = buffer.data()                            # numpy [S, H, ...] arrays for the update
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from shoal.errors import APIUsageError

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["RolloutBuffer", "RolloutData", "RolloutTensors"]


@dataclass
class RolloutData:
    """One update's data, ``S`` segments of ``H`` steps (numpy; :meth:`to_torch` converts).

    Attributes:
        obs: ``[S, H, flat_size]`` observations (flat dtype of the layout; zero at padding).
        actions: ``[S, H, *action_shape]`` flat actions.
        log_probs, values: float32 ``[S, H]`` log-probability of the action and value, when acting.
        rewards: float32 ``[S, H]`` (scaled/clipped) rewards; next_values: float32 ``[S, H]`` (see module
            docs).
        dones: bool ``[S, H]`` the advantage trace stops after the step (episode end, segment end, padding).
        terminals, truncations: bool ``[S, H]`` how the episode ended after the step (truncations excludes
            terminals).
        starts: bool ``[S, H]`` a new episode starts at the step (resets the LSTM state).
        valid: bool ``[S, H]`` the step holds a transition (False = padding at the end of a segment).
        action_masks: bool ``[S, H, W]`` legal actions, or None.
        agent_ids: int64 ``[S, H]`` slot index of the agent.
        states: initial LSTM state of each segment: ``(h, c)``, float32 ``[S, lstm_size]`` each, or None.
        rows: int64 ``[S]`` vector row each segment came from.
        critic_obs: float32 ``[S, H, C]`` centralized critic inputs (zero at padding), or None (the critic reads
            the actor's features).
    """

    obs: np.ndarray
    actions: np.ndarray
    log_probs: np.ndarray
    values: np.ndarray
    rewards: np.ndarray
    next_values: np.ndarray
    dones: np.ndarray
    terminals: np.ndarray
    truncations: np.ndarray
    starts: np.ndarray
    valid: np.ndarray
    action_masks: np.ndarray | None
    agent_ids: np.ndarray
    states: tuple[np.ndarray, np.ndarray] | None
    rows: np.ndarray
    critic_obs: np.ndarray | None = None

    @property
    def num_segments(self) -> int:
        return int(self.valid.shape[0])

    @property
    def num_transitions(self) -> int:
        return int(self.valid.sum())

    def to_torch(self, device: Any) -> RolloutTensors:
        """Every array as a torch tensor on ``device``, in a :class:`RolloutTensors` of the same fields."""
        import torch

        def t(x: np.ndarray | None) -> Any:
            return None if x is None else torch.from_numpy(np.ascontiguousarray(x)).to(device)

        fields = {f.name: t(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "states"}
        states = None if self.states is None else (t(self.states[0]), t(self.states[1]))
        return RolloutTensors(**fields, states=states)


@dataclass
class RolloutTensors:
    """:class:`RolloutData` as torch tensors on the learner's device (same fields, shapes and dtypes)."""

    obs: Tensor
    actions: Tensor
    log_probs: Tensor
    values: Tensor
    rewards: Tensor
    next_values: Tensor
    dones: Tensor
    terminals: Tensor
    truncations: Tensor
    starts: Tensor
    valid: Tensor
    action_masks: Tensor | None
    agent_ids: Tensor
    states: tuple[Tensor, Tensor] | None
    rows: Tensor
    critic_obs: Tensor | None = None


class RolloutBuffer:
    """Storage and per-slot bookkeeping for one rollout at a time (see the module docstring).

    Args:
        num_rows: rows of the vector env (``num_envs * agents_per_env``).
        horizon: ``H``, transitions per segment.
        target: transitions per rollout; the rollout is complete once :attr:`stored` reaches it.
        obs_shape, obs_dtype: one flat observation row.
        action_shape, action_dtype: one flat action.
        mask_width: width of a legal-action mask row (0: none stored).
        state_size: LSTM size (0: not recurrent).
    """

    @staticmethod
    def segments(num_rows: int, horizon: int, target: int) -> int:
        """Segments of ``horizon`` transitions the buffer holds for ``num_rows`` rows and ``target`` transitions."""
        # Each row leaves at most one open segment, and one step completes at most one transition per row.
        return -(-(target + num_rows) // horizon) + num_rows + 1

    def __init__(
        self,
        num_rows: int,
        horizon: int,
        target: int,
        obs_shape: tuple[int, ...],
        obs_dtype: Any,
        action_shape: tuple[int, ...],
        action_dtype: Any,
        mask_width: int = 0,
        state_size: int = 0,
    ) -> None:
        if horizon < 1 or target < 1 or num_rows < 1:
            raise APIUsageError(f"horizon={horizon}, target={target} and num_rows={num_rows} must be >= 1")
        self.num_rows = r = num_rows
        self.horizon = h = horizon
        self.target = target
        self.capacity = s = self.segments(num_rows, horizon, target)
        obs_dtype, action_dtype = np.dtype(obs_dtype), np.dtype(action_dtype)
        self.all_rows = np.arange(r)
        # Per row.
        self.pending = np.zeros(r, np.bool_)  # an action waits for its outcome at (segment, position)
        self.p_rewards = np.zeros(r, np.float32)  # rewards delivered to the pending action so far
        #: ``bool[num_rows]``: a new episode starts at the row's next action (the LSTM ``done`` flag).
        self.starts = np.ones(r, np.bool_)
        self.segment = np.full(r, -1, np.int64)  # open segment of the row (-1: none)
        self.position = np.zeros(r, np.int64)  # where the row's next action goes in it
        self.await_segment = np.full(r, -1, np.int64)  # closed segment waiting for the row's next value
        self.p_states = (
            (np.zeros((r, state_size), np.float32), np.zeros((r, state_size), np.float32))
            if state_size
            else None
        )  # LSTM state before the pending action (carried into the next rollout)
        # Per step of a segment.
        self.obs = np.zeros((s, h, *obs_shape), obs_dtype)
        self.actions = np.zeros((s, h, *action_shape), action_dtype)
        self.log_probs = np.zeros((s, h), np.float32)
        self.values = np.zeros((s, h), np.float32)
        self.rewards = np.zeros((s, h), np.float32)
        self.final_values = np.zeros((s, h), np.float32)
        self.terminals = np.zeros((s, h), np.bool_)
        self.truncations = np.zeros((s, h), np.bool_)
        self.seg_starts = np.zeros((s, h), np.bool_)
        self.valid = np.zeros((s, h), np.bool_)
        self.action_masks = np.ones((s, h, mask_width), np.bool_) if mask_width else None
        self.agent_ids = np.zeros((s, h), np.int64)
        # Per segment.
        self.states = (
            (np.zeros((s, state_size), np.float32), np.zeros((s, state_size), np.float32))
            if state_size
            else None
        )
        self.boot = np.full(s, np.nan, np.float32)
        self.segment_rows = np.zeros(s, np.int64)
        self.used = 0
        self.stored = 0
        # Lockstep: every row's open segment is block + row, all at the same position.
        self._lockstep = True
        self._block = -1

    @property
    def full(self) -> bool:
        """True once the rollout holds ``target`` transitions."""
        return self.stored >= self.target

    def _all(self, rows: np.ndarray) -> bool:
        if rows is self.all_rows:
            return True
        return len(rows) == self.num_rows and bool((rows == self.all_rows).all())

    def _allocate(self, rows: np.ndarray) -> np.ndarray:
        n = len(rows)
        if self.used + n > self.capacity:
            raise RuntimeError(
                f"rollout buffer overflow ({self.used + n} > {self.capacity} segments): act() "
                "or finish() was called after the rollout was full"
            )
        new = np.arange(self.used, self.used + n)
        self.used += n
        self.segment[rows] = new
        self.position[rows] = 0
        self.segment_rows[new] = rows
        self.boot[new] = np.nan
        return new

    # ---- rollout -------------------------------------------------------------------------------------------

    def begin(self) -> None:
        """Start a new rollout: forget stored transitions; pending actions move to fresh segments."""
        rows = np.flatnonzero(self.pending)
        carried = None
        if len(rows):
            seg, pos = self.segment[rows], self.position[rows]
            carried = [
                self.obs[seg, pos],
                self.actions[seg, pos],
                self.log_probs[seg, pos],
                self.values[seg, pos],
                self.seg_starts[seg, pos],
                self.agent_ids[seg, pos],
                None if self.action_masks is None else self.action_masks[seg, pos],
            ]
        self.valid[: self.used] = False
        self.used = 0
        self.stored = 0
        self.segment[:] = -1
        self.position[:] = 0
        self.await_segment[:] = -1
        self._lockstep = len(rows) in (0, self.num_rows)
        self._block = -1
        if carried is not None:
            new = self._allocate(rows)
            obs, actions, log_probs, values, starts, agent_ids, masks = carried
            self.obs[new, 0] = obs
            self.actions[new, 0] = actions
            self.log_probs[new, 0] = log_probs
            self.values[new, 0] = values
            self.seg_starts[new, 0] = starts
            self.agent_ids[new, 0] = agent_ids
            if masks is not None:
                self.action_masks[new, 0] = masks
            if self.states is not None:
                self.states[0][new] = self.p_states[0][rows]
                self.states[1][new] = self.p_states[1][rows]
            if self._lockstep:
                self._block = 0

    def act(
        self,
        rows: np.ndarray,
        obs: np.ndarray,
        actions: np.ndarray,
        log_probs: np.ndarray,
        values: np.ndarray,
        action_masks: np.ndarray | None = None,
        agent_ids: np.ndarray | None = None,
        states: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Record that the live agents of ``rows`` acted.

        Args:
            rows: int64 ``[B]`` distinct vector rows, ascending.
            obs: ``[B, *obs_shape]`` observations they acted on; actions ``[B, *action_shape]``.
            log_probs, values: float32 ``[B]``.
            action_masks: bool ``[B, W]`` legal-action masks used (None: all legal).
            agent_ids: int64 ``[B]``.
            states: LSTM state *before* the step, ``(h, c)`` float32 ``[B, lstm_size]`` each (recurrent only).
        """
        if self.p_states is not None and states is None:
            raise APIUsageError("this buffer stores LSTM states: pass states=(h, c) to act()")
        if self._lockstep and self._all(rows) and not self.pending.any():
            if self._block < 0:  # a new block of segments, one per row
                if (self.await_segment >= 0).any():
                    self._resolve(self.all_rows, values)
                self._block = self.used
                new = self._allocate(self.all_rows)
                if self.states is not None:
                    self.states[0][new] = states[0]
                    self.states[1][new] = states[1]
            seg: Any = slice(self._block, self._block + self.num_rows)
            pos: Any = int(self.position[0])
            starts = self.starts.copy()
            self.starts[:] = False
            self.pending[:] = True
        else:
            self._lockstep = False
            if (self.await_segment[rows] >= 0).any():
                self._resolve(rows, values)
            fresh = self.segment[rows] < 0
            if fresh.any():
                new = self._allocate(rows[fresh])
                if self.states is not None:
                    self.states[0][new] = states[0][fresh]
                    self.states[1][new] = states[1][fresh]
            seg, pos = self.segment[rows], self.position[rows]
            starts = self.starts[rows]
            self.starts[rows] = False
            self.pending[rows] = True
        self.obs[seg, pos] = obs
        self.actions[seg, pos] = actions
        self.log_probs[seg, pos] = log_probs
        self.values[seg, pos] = values
        self.seg_starts[seg, pos] = starts
        if self.action_masks is not None:
            self.action_masks[seg, pos] = True if action_masks is None else action_masks
        if agent_ids is not None:
            self.agent_ids[seg, pos] = agent_ids
        if self.p_states is not None:
            self.p_states[0][rows] = states[0]
            self.p_states[1][rows] = states[1]

    def _resolve(self, rows: np.ndarray, values: np.ndarray) -> None:
        waiting = self.await_segment[rows]
        has = waiting >= 0
        self.boot[waiting[has]] = values[has]
        self.await_segment[rows[has]] = -1

    def finish(
        self,
        rows: np.ndarray,
        rewards: np.ndarray,
        terminals: np.ndarray,
        truncations: np.ndarray,
        masks: np.ndarray,
        final_values: np.ndarray | None = None,
    ) -> np.ndarray:
        """Apply one env result to ``rows``: add rewards to pending transitions, complete those that ended.

        Args:
            rows: int64 ``[B]`` the vector rows of the result, ascending.
            rewards: float32 ``[B]`` (already scaled/clipped); terminals, truncations, masks: bool ``[B]``.
            final_values: float32 ``[B]`` value of the final observation, read where truncated and not
                terminated (None: 0).

        Returns:
            bool ``[B]``: which of ``rows`` completed a transition.
        """
        ended = terminals | truncations
        if (
            self._lockstep
            and self._block >= 0
            and self._all(rows)
            and self.pending.all()
            and bool((masks | ended).all())
        ):
            seg: Any = slice(self._block, self._block + self.num_rows)
            pos: Any = int(self.position[0])
            c: Any = slice(None)
            complete = np.ones(len(rows), np.bool_)
            self.rewards[seg, pos] = rewards
            self.starts |= ended
        else:
            self._lockstep = False
            self.starts[rows[ended]] = True
            pending = self.pending[rows]
            self.p_rewards[rows] += np.where(pending, rewards, np.float32(0.0))
            complete = pending & (masks | ended)
            if not complete.any():
                return complete
            c = rows[complete]
            seg, pos = self.segment[c], self.position[c]
            self.rewards[seg, pos] = self.p_rewards[c]
            self.p_rewards[c] = 0.0
            terminals, truncations = terminals[complete], truncations[complete]
            if final_values is not None:
                final_values = final_values[complete]
        truncations = truncations & ~terminals
        self.terminals[seg, pos] = terminals
        self.truncations[seg, pos] = truncations
        if final_values is not None:
            self.final_values[seg, pos] = final_values
        elif truncations.any():
            self.final_values[seg, pos] = 0.0
        self.valid[seg, pos] = True
        self.pending[c] = False
        self.stored += len(self.pending[c]) if isinstance(c, slice) else len(c)
        self.position[c] += 1
        closed = self.position[c] >= self.horizon
        if closed.any():
            going = ~(terminals | truncations)
            rows_c = self.all_rows if isinstance(c, slice) else c
            seg_c = np.arange(self._block, self._block + self.num_rows) if isinstance(seg, slice) else seg
            wait = closed & going
            self.await_segment[rows_c[wait]] = seg_c[wait]
            self.segment[rows_c[closed]] = -1
            self.position[rows_c[closed]] = 0
            if isinstance(c, slice):
                self._block = -1
        return complete

    def waiting_rows(self) -> np.ndarray:
        """Rows that owe a next value: last valid step not an episode end, not acted since."""
        tail = np.flatnonzero((self.segment >= 0) & (self.position > 0) & ~self.pending)
        seg, last = self.segment[tail], self.position[tail] - 1
        tail = tail[~(self.terminals[seg, last] | self.truncations[seg, last])]
        return np.union1d(np.flatnonzero(self.await_segment >= 0), tail)

    def bootstrap(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Give ``rows`` (from :meth:`waiting_rows`) their next value ``values`` (float32 ``[B]``)."""
        awaiting = self.await_segment[rows] >= 0
        if awaiting.any():
            self._resolve(rows[awaiting], values[awaiting])
        rest = ~awaiting & (self.segment[rows] >= 0)
        self.boot[self.segment[rows[rest]]] = values[rest]

    def data(self) -> RolloutData:
        """The stored segments (copies, padding zeroed); raises if a transition still lacks its next value."""
        n = self.used
        # Pending actions at the tail of a segment give the value its last valid step bootstraps from.
        tails = np.flatnonzero(self.pending & (self.segment >= 0) & (self.position > 0))
        if len(tails):
            self.boot[self.segment[tails]] = self.values[self.segment[tails], self.position[tails]]
        keep = self.valid[:n].any(1)
        index = np.flatnonzero(keep)
        valid = self.valid[index]
        lengths = valid.sum(1)
        last = np.zeros_like(valid)
        last[np.arange(len(index)), lengths - 1] = True
        terminals = self.terminals[index] & valid
        truncations = self.truncations[index] & valid
        values = np.where(valid, self.values[index], np.float32(0.0))
        next_values = np.zeros_like(values)
        next_values[:, :-1] = values[:, 1:]
        next_values = np.where(last, self.boot[index][:, None], next_values)
        next_values = np.where(truncations, self.final_values[index], next_values)
        next_values = np.where(terminals | ~valid, np.float32(0.0), next_values)
        if np.isnan(next_values).any():
            rows = sorted(set(self.segment_rows[index][np.isnan(next_values).any(1)].tolist()))
            raise RuntimeError(
                f"transitions of rows {rows} have no next value: call bootstrap() for "
                "waiting_rows() before data()"
            )
        obs = self.obs[index]
        obs[~valid] = 0
        actions = self.actions[index]
        actions[~valid] = 0
        return RolloutData(
            obs=obs,
            actions=actions,
            log_probs=np.where(valid, self.log_probs[index], np.float32(0.0)),
            values=values,
            rewards=np.where(valid, self.rewards[index], np.float32(0.0)),
            next_values=next_values,
            dones=terminals | truncations | last | ~valid,
            terminals=terminals,
            truncations=truncations,
            starts=self.seg_starts[index] & valid,
            valid=valid,
            action_masks=None
            if self.action_masks is None
            else np.where(valid[..., None], self.action_masks[index], True),
            agent_ids=np.where(valid, self.agent_ids[index], 0),
            states=None if self.states is None else (self.states[0][index], self.states[1][index]),
            rows=self.segment_rows[index],
        )

    # ---- checkpointing -------------------------------------------------------------------------------------

    def carry_state(self) -> dict[str, Any]:
        """What survives between rollouts (pending actions, episode starts), copied for a checkpoint."""
        rows = np.flatnonzero(self.pending)
        seg, pos = self.segment[rows], self.position[rows]
        return {
            "rows": rows,
            "obs": self.obs[seg, pos],
            "actions": self.actions[seg, pos],
            "log_probs": self.log_probs[seg, pos],
            "values": self.values[seg, pos],
            "seg_starts": self.seg_starts[seg, pos],
            "agent_ids": self.agent_ids[seg, pos],
            "action_masks": None if self.action_masks is None else self.action_masks[seg, pos],
            "p_rewards": self.p_rewards.copy(),
            "starts": self.starts.copy(),
            "p_states": None if self.p_states is None else (self.p_states[0].copy(), self.p_states[1].copy()),
        }

    def load_carry_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`carry_state` output into an empty buffer (:meth:`begin` moves it)."""
        self.begin()
        rows = np.asarray(state["rows"], np.int64)
        self.pending[:] = False
        self.pending[rows] = True
        self.p_rewards[...] = state["p_rewards"]
        self.starts[...] = state["starts"]
        if self.p_states is not None:
            self.p_states[0][...] = state["p_states"][0]
            self.p_states[1][...] = state["p_states"][1]
        if len(rows):
            new = self._allocate(rows)
            self.obs[new, 0] = state["obs"]
            self.actions[new, 0] = state["actions"]
            self.log_probs[new, 0] = state["log_probs"]
            self.values[new, 0] = state["values"]
            self.seg_starts[new, 0] = state["seg_starts"]
            self.agent_ids[new, 0] = state["agent_ids"]
            if self.action_masks is not None:
                self.action_masks[new, 0] = state["action_masks"]
