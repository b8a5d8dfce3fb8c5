"""Per-slot episodes out of a vector env's results: the one place that turns acting into an :class:`OfflineDataset`.

:class:`EpisodeRecorder` follows the rules of the off-policy replay (:mod:`shoal.train.core.replay`), per vector
row (one agent slot of one env):

* a step is a decision of the slot: :meth:`~EpisodeRecorder.act` records the observation it acted on, its legal
  actions and the action the env received;
* every reward the slot receives until its next decision or its episode's end adds onto that step (in turn-based
  AEC games the rewards earned while others move, e.g. the loser's -1, land on its last move);
* an episode ends with the slot's termination or truncation; the observation after its last step is the env's
  final observation (``infos[k]["final_observation"]``), or the slot's last observation when the env gave none
  (counted in ``metadata["missing_final_observations"]``);
* padded, dead and waiting slots decided nothing, so they store nothing; a slot's next episode (respawn, reset)
  starts with its next decision, in the agent type it then has.

When recording stops (:meth:`~EpisodeRecorder.stop`, :meth:`~EpisodeRecorder.dataset`), running episodes are kept and
end with ``truncations=True``: at their last answered step, the observation they were about to act on as final. A
decision still waiting for its outcome then (a turn-based slot between its move and its next turn) has no next
observation: it is left out, and counted in ``metadata["unanswered_decisions"]``.

Everything is held in memory (about ``row_bytes + action_bytes + mask_width + 18`` bytes per step) until
:meth:`dataset`.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

import numpy as np

from shoal.datasets.episodes import OfflineDataset
from shoal.emulation.actions import ActionLayout
from shoal.emulation.base import action_mask_width
from shoal.emulation.layout import Layout
from shoal.errors import APIUsageError
from shoal.interrupts import deferred_signals

__all__ = ["EpisodeRecorder"]


class _Growing:
    """A 1-D array that grows by doubling (per-step values written after the step was recorded)."""

    def __init__(self, dtype: Any) -> None:
        self.data = np.zeros(1024, dtype)
        self.size = 0

    def extend(self, count: int) -> np.ndarray:
        """Indices of ``count`` new zeroed entries."""
        if self.size + count > len(self.data):
            grown = np.zeros(max(2 * len(self.data), self.size + count), self.data.dtype)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        index = np.arange(self.size, self.size + count)
        self.size += count
        return index

    def view(self) -> np.ndarray:
        return self.data[: self.size]


class EpisodeRecorder:
    """Builds per-slot episodes from the decisions and results of ``num_rows`` vector rows (module docstring).

    Args:
        obs_layout: the vector env's per-slot observation layout (``vecenv.obs_layout``).
        action_layout: its action layout (``vecenv.action_layout``).
        num_rows: rows of the vector env (``num_envs * agents_per_env``).
        agents_per_env: slots per env (an episode's ``agent`` is ``row % agents_per_env``).
    """

    def __init__(self, obs_layout: Layout, action_layout: ActionLayout, num_rows: int, agents_per_env: int) -> None:
        self.obs_layout = obs_layout
        self.action_layout = action_layout
        self.num_rows = num_rows
        self.agents_per_env = agents_per_env
        self.mask_width = action_mask_width(action_layout) if action_layout.kind != "continuous" else 0
        # per decision: chunks as recorded, and outcomes written later
        self._obs: list[np.ndarray] = []
        self._actions: list[np.ndarray] = []
        self._masks: list[np.ndarray] = []
        self._episode_of: list[np.ndarray] = []
        self._chunk_starts: list[int] = []  # the first decision of each chunk
        self._rewards = _Growing(np.float64)
        self._terminations = _Growing(np.bool_)
        self._truncations = _Growing(np.bool_)
        # per episode (in the order they started)
        self._agents: list[int] = []
        self._agent_types: list[int] = []
        self._final: dict[int, np.ndarray] = {}  # episode -> observation after its last step
        # per row
        self._episode = np.full(num_rows, -1, np.int64)  # open episode, or -1
        self._pending = np.full(num_rows, -1, np.int64)  # decision waiting for its outcome, or -1
        self._last = np.full(num_rows, -1, np.int64)  # the open episode's last decision
        self._last_obs = np.zeros((num_rows, obs_layout.flat_size), obs_layout.flat_dtype)
        self._stopped = np.zeros(num_rows, np.bool_)
        self.missing_final = 0

    # ---- recording -----------------------------------------------------------------------------------------

    @property
    def num_steps(self) -> int:
        """Decisions recorded so far."""
        return self._rewards.size

    @property
    def pending(self) -> np.ndarray:
        """bool ``[num_rows]``: rows whose last decision waits for its outcome."""
        return self._pending >= 0

    def act(self, rows: np.ndarray, obs: np.ndarray, actions: np.ndarray, action_masks: np.ndarray | None = None,
            agent_types: np.ndarray | None = None) -> None:
        """Record the decisions of ``rows``.

        Args:
            rows: int64 ``[B]`` distinct rows deciding now (live, not stopped).
            obs: ``[B, flat_size]`` the observations they act on. actions: ``[B, *flat_action_shape]`` the actions
                the env receives. action_masks: bool ``[B, mask_width]`` their legal actions, or None (all legal).
            agent_types: int32 ``[B]`` the agent type in each row, or None (0).
        """
        rows = np.asarray(rows, np.int64)
        if not len(rows):
            return
        if self._stopped[rows].any() or (self._pending[rows] >= 0).any():
            bad = int(rows[self._stopped[rows] | (self._pending[rows] >= 0)][0])
            raise APIUsageError(f"row {bad} cannot decide now: its recording was stopped, or its last decision has "
                                "had no result yet (call finish with the env's result first)")
        # every entry of the step first (copies, shapes), then the recorder's lists and arrays in one section that
        # Ctrl-C cannot cut: a half-applied step would misalign them for the dataset saved after the interrupt
        obs = np.array(obs, self.obs_layout.flat_dtype, copy=True)
        actions = np.array(actions, self.action_layout.flat_dtype, copy=True).reshape(
            len(rows), *self.action_layout.flat_shape)
        masks = None
        if self.mask_width:
            masks = (np.ones((len(rows), self.mask_width), np.bool_) if action_masks is None
                     else np.array(action_masks, np.bool_, copy=True))
        types = np.zeros(len(rows), np.int32) if agent_types is None else np.asarray(agent_types)
        starting = self._episode[rows] < 0
        first = len(self._agents)
        episode_of = self._episode[rows].copy()
        episode_of[starting] = np.arange(first, first + int(starting.sum()))
        with deferred_signals():
            self._agents.extend(int(r) % self.agents_per_env for r in rows[starting])
            self._agent_types.extend(int(t) for t in types[starting])
            self._episode[rows] = episode_of
            self._chunk_starts.append(self._rewards.size)
            index = self._rewards.extend(len(rows))
            self._terminations.extend(len(rows))
            self._truncations.extend(len(rows))
            self._obs.append(obs)
            self._actions.append(actions)
            if masks is not None:
                self._masks.append(masks)
            self._episode_of.append(episode_of)
            self._pending[rows] = index
            self._last[rows] = index

    def finish(self, rows: np.ndarray, rewards: np.ndarray, terminals: np.ndarray, truncations: np.ndarray,
               live: np.ndarray, obs: np.ndarray, infos: Sequence[dict[str, Any]]) -> None:
        """Apply an env result to ``rows`` (int64 ``[B]``): ``rewards`` float ``[B]``, ``terminals``,
        ``truncations``, ``live`` bool ``[B]`` (``live``: the slot must act now), ``obs`` ``[B, flat_size]``
        and ``infos`` (``"final_observation"`` of ended slots)."""
        rows = np.asarray(rows, np.int64)
        with deferred_signals():  # applied whole, as act's step is (a half-applied result misaligns the episodes)
            self._finish(rows, rewards, terminals, truncations, live, obs, infos)

    def _finish(self, rows: np.ndarray, rewards: np.ndarray, terminals: np.ndarray, truncations: np.ndarray,
                live: np.ndarray, obs: np.ndarray, infos: Sequence[dict[str, Any]]) -> None:
        pending = self._pending[rows]
        waiting = pending >= 0
        if waiting.any():
            self._rewards.data[pending[waiting]] += np.asarray(rewards, np.float64)[waiting]
        ended = np.asarray(terminals) | np.asarray(truncations)
        for k in np.flatnonzero(ended & (self._episode[rows] >= 0)):
            row, last = int(rows[k]), int(self._last[rows[k]])
            self._terminations.data[last] = bool(terminals[k])
            self._truncations.data[last] = bool(truncations[k])
            final = infos[k].get("final_observation") if infos[k] else None
            if final is None:  # the env gave none: the slot's last observation stands in for it
                self.missing_final += 1
                final = self._obs_of(last) if self._pending[row] >= 0 else self._last_obs[row]
            self._close(row, final)
        live = np.asarray(live, np.bool_)
        answered = live & ~ended
        if answered.any():
            live_rows = rows[answered]
            self._last_obs[live_rows] = obs[answered]
            self._pending[live_rows] = -1
            for row in live_rows[self._stopped[live_rows] & (self._episode[live_rows] >= 0)]:
                self._truncate(int(row))
        if live.any():  # a new episode's first observation (after a reset in the same result)
            self._last_obs[rows[live]] = obs[live]

    def stop(self, rows: np.ndarray | None = None) -> None:
        """Record no more decisions of ``rows`` (default: every row). Their running episodes end now, truncated,
        unless their last decision waits for its outcome: those end once :meth:`finish` answers it."""
        rows = np.arange(self.num_rows) if rows is None else np.asarray(rows, np.int64)
        self._stopped[rows] = True
        for row in rows[(self._episode[rows] >= 0) & (self._pending[rows] < 0)]:
            self._truncate(int(row))

    def _truncate(self, row: int) -> None:
        """End ``row``'s running episode at its last answered step, truncated, before its next decision."""
        self._truncations.data[self._last[row]] = True
        self._close(row, self._last_obs[row])

    def _close(self, row: int, final: np.ndarray) -> None:
        episode = int(self._episode[row])
        self._final[episode] = np.array(final, self.obs_layout.flat_dtype, copy=True).reshape(-1)
        self._episode[row] = -1
        self._pending[row] = -1
        self._last[row] = -1

    def _obs_of(self, decision: int) -> np.ndarray:
        """The observation ``decision`` acted on."""
        chunk = bisect.bisect_right(self._chunk_starts, decision) - 1
        return self._obs[chunk][decision - self._chunk_starts[chunk]]

    # ---- the dataset ---------------------------------------------------------------------------------------

    def dataset(self, metadata: dict[str, Any] | None = None) -> OfflineDataset:
        """Every episode recorded so far (running ones end as :meth:`stop` ends them, without changing this
        recorder), in the order they started. Its ``metadata`` is ``metadata`` with ``steps`` (the steps stored),
        ``unanswered_decisions`` (decisions left out, see the module docstring) and
        ``missing_final_observations`` set.

        Raises:
            APIUsageError: nothing was recorded yet.
        """
        episode_of = np.concatenate(self._episode_of) if self._episode_of else np.zeros(0, np.int64)
        truncations = self._truncations.view().copy()
        final = dict(self._final)
        keep = np.ones(len(episode_of), np.bool_)
        unanswered = 0
        for row in np.flatnonzero(self._episode >= 0):  # running episodes, as stop() would end them
            episode, pending, last = int(self._episode[row]), int(self._pending[row]), int(self._last[row])
            if pending >= 0:  # the unanswered decision is left out; the one before it ends the episode
                keep[pending] = False
                unanswered += 1
                final[episode] = self._obs_of(pending)
                before = np.flatnonzero((episode_of == episode) & keep)
                if len(before):
                    truncations[before[-1]] = True
            else:
                truncations[last] = True
                final[episode] = self._last_obs[row].copy()
        kept = np.flatnonzero(keep)
        if not len(kept):
            raise APIUsageError("no step was recorded: record for more steps (a dataset needs one whole step)")
        order = kept[np.argsort(episode_of[kept], kind="stable")]  # by episode, each in time order
        episodes, lengths = np.unique(episode_of[order], return_counts=True)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        steps, count = len(order), len(episodes)
        rank = np.repeat(np.arange(count), lengths)
        observations = np.zeros((steps + count, self.obs_layout.flat_size), self.obs_layout.flat_dtype)
        observations[np.arange(steps) + rank] = np.concatenate(self._obs)[order]
        observations[offsets[1:] + np.arange(count)] = np.stack([final[int(e)] for e in episodes])
        masks = None
        if self.mask_width:
            masks = np.ones((steps + count, self.mask_width), np.bool_)  # a final observation: every action legal
            masks[np.arange(steps) + rank] = np.concatenate(self._masks)[order]
        meta = dict(metadata or {})
        meta["steps"] = steps  # the steps stored: the decisions recorded less the unanswered ones
        meta["unanswered_decisions"] = unanswered
        meta["missing_final_observations"] = self.missing_final
        return OfflineDataset(
            observations=observations,
            actions=np.concatenate(self._actions)[order],
            rewards=self._rewards.view()[order].astype(np.float32),
            terminations=self._terminations.view()[order].copy(),
            truncations=truncations[order],
            episode_offsets=offsets,
            obs_layout=self.obs_layout,
            action_layout=self.action_layout,
            action_masks=masks,
            agents=np.array([self._agents[int(e)] for e in episodes], np.int32),
            agent_types=np.array([self._agent_types[int(e)] for e in episodes], np.int32),
            metadata=meta,
        )
