"""Opponents of a self-play league: how they are chosen (the mix) and how they act (players).

The opponent mix
    ``TrainConfig.league_opponents`` is a comma-separated list of ``name[:weight]`` entries (weights are
    normalized; a bare name weighs 1). Each time an env starts an episode, one entry is drawn by weight for each
    seat the learner does not take, then the entry picks the opponent:

    * ``self``: the live learner itself, as in plain self-play: it acts in that seat too and learns from it (its
      rows are learner rows). A seat against a frozen copy teaches only one side of each game, and a copy even a
      few updates old is a fixed target the learner overfits to beating (it lost to perfect play far more often
      than plain self-play at the same step budget); live seats keep the plain self-play signal, and the frozen
      pool adds robustness on top;
    * ``latest``: the newest frozen snapshot of the learner;
    * ``uniform``: a snapshot drawn uniformly from the whole history (fictitious self-play);
    * ``pfsp``: prioritized fictitious self-play: snapshot ``j`` is drawn with probability proportional to
      ``(1 - p_j) ** 2``, where ``p_j`` is the learner's expected score against ``j`` from the current ELO
      ratings (AlphaStar's "hard" weighting: opponents the learner struggles against are played most; a
      snapshot it always beats is almost never drawn);
    * ``random`` / ``heuristic``: the scripted baseline of that name (see :mod:`shoal.train.selfplay.heuristics`);
      ``solver`` (exact tic-tac-toe) / ``alphabeta[@depth]`` (connect four): the search players of
      :mod:`shoal.train.selfplay.search`. Naming a baseline also adds it to the league table as a fixed-rating
      anchor.

    ``"self:0.8,uniform:0.2"`` (the default) plays 80% of the seats live and 20% against past snapshots.

Players
    Anything with ``player_id``, ``bind(num_rows, agents_per_env)`` and ``act(obs, action_masks, rows, starts)``
    (see :class:`Player`). :class:`PolicyPlayer` wraps a frozen policy (one batched forward per call, over every
    bound row when it replays traces; LSTM state per vector row, zeroed where ``starts``), :class:`ScriptedPlayer`
    a numpy function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from shoal.errors import APIUsageError
from shoal.train.acting import RowActor
from shoal.train.config import BASELINES, STRATEGIES, Mix, is_baseline, parse_mix
from shoal.train.selfplay.heuristics import ScriptedPolicy

__all__ = [
    "BASELINES",
    "STRATEGIES",
    "OpponentSampler",
    "Player",
    "PolicyPlayer",
    "ScriptedPlayer",
    "frozen_copy",
    "parse_mix",
]



class OpponentSampler:
    """Draws opponent ids from a mix (see the module docstring).

    Args:
        mix: output of :func:`parse_mix`.
        pfsp_power: exponent of the PFSP weighting ``(1 - p) ** pfsp_power``.
    """

    def __init__(self, mix: Mix, pfsp_power: float = 2.0) -> None:
        self.mix = mix
        self.names = [name for name, _ in mix]
        self.weights = np.array([w for _, w in mix], np.float64)
        self.pfsp_power = pfsp_power

    @property
    def baselines(self) -> list[str]:
        """The scripted baselines the mix names (they join the league as anchors)."""
        return [name for name in self.names if is_baseline(name)]

    def pfsp_weights(self, expected: np.ndarray) -> np.ndarray:
        """Normalized PFSP weights from the learner's expected scores ``expected`` float ``[n]``."""
        w = np.clip(1.0 - np.asarray(expected, np.float64), 0.0, 1.0) ** self.pfsp_power
        total = w.sum()
        return np.full(len(w), 1.0 / len(w)) if total <= 0 else w / total

    def sample(self, rng: np.random.Generator, snapshots: Sequence[str],
               expected_score: Callable[[str], float]) -> str:
        """One opponent id: ``"self"`` (the live learner), a snapshot (``snapshots`` oldest first, not empty) or a
        baseline name.

        ``expected_score(id)`` is the learner's expected score against ``id`` (used by ``pfsp``).
        """
        if not snapshots:
            raise APIUsageError("the league has no snapshot to play against yet")
        name = self.names[0] if len(self.names) == 1 else self.names[int(rng.choice(len(self.names), p=self.weights))]
        if name == "latest":
            return snapshots[-1]
        if name == "uniform":
            return snapshots[int(rng.integers(len(snapshots)))]
        if name == "pfsp":
            weights = self.pfsp_weights(np.array([expected_score(s) for s in snapshots]))
            return snapshots[int(rng.choice(len(snapshots), p=weights))]
        return name


class Player(Protocol):
    """Something that picks actions for a batch of vector rows."""

    player_id: str

    def bind(self, num_rows: int, agents_per_env: int) -> None:
        """Prepare for a vector env of ``num_rows`` rows, ``agents_per_env`` per env (per-row state)."""

    def act(self, obs: np.ndarray, action_masks: np.ndarray | None, rows: np.ndarray,
            starts: np.ndarray) -> np.ndarray:
        """Actions for ``B`` rows.

        Args:
            obs: ``[B, flat_size]`` flat observation rows (the layout's flat dtype).
            action_masks: bool ``[B, W]`` legal actions, or None.
            rows: int64 ``[B]`` the vector rows (keys of per-row state).
            starts: bool ``[B]`` True where the row's episode starts at this action (reset its state).

        Returns:
            ``[B, *flat_action_shape]`` flat actions ready to send (int64 ``[B]`` for ``Discrete``).
        """
        ...


class ScriptedPlayer:
    """A :class:`Player` backed by a numpy function ``fn(obs, action_masks, rng) -> actions`` (no state).

    Args:
        player_id: its id in the league. fn: the scripted policy. rng: the generator it draws from.
    """

    def __init__(self, player_id: str, fn: ScriptedPolicy, rng: np.random.Generator) -> None:
        self.player_id = player_id
        self.fn = fn
        self.rng = rng

    def bind(self, num_rows: int, agents_per_env: int) -> None:
        pass

    def act(self, obs: np.ndarray, action_masks: np.ndarray | None, rows: np.ndarray,
            starts: np.ndarray) -> np.ndarray:
        return self.fn(obs, action_masks, self.rng)


class PolicyPlayer:
    """A :class:`Player` backed by a (frozen) policy with the :class:`~shoal.policies.Policy` forward contract.

    Each :meth:`act` is one batched forward: over the given rows, or over every bound row when the player replays
    traces (``trace``; the others' outputs are dropped). A recurrent policy keeps an LSTM state per
    vector row (``[1, num_rows, lstm_size]``), zeroed where ``starts`` is True, advanced only for the rows that
    act. Gradients are never taken; the policy is put in eval mode.

    Args:
        player_id: its id in the league.
        policy: the policy (not copied: pass a frozen copy when the original keeps training).
        deterministic: take the most likely action instead of sampling.
        device: where to run it (default: the policy's device).
        trace: a sampling player replays verified TorchScript traces of its acting pass. It then runs every
            bound row at each :meth:`act` (the rows not asked for are masked out and their state kept), so the
            batch shape, and with it the trace, stays the same however many rows it plays: a trace costs tens of
            milliseconds to make and check and torch never frees it, and a player whose batch size changed from
            call to call made one per size. Worth it for players that live long (league pool members); a player of
            a few games acts eagerly with ``trace=False``.

    Raises:
        APIUsageError: a sequence policy (the Decision Transformer): it conditions on a target return and the
            rewards of its own episode, which games between players do not give it.
    """

    def __init__(self, player_id: str, policy: nn.Module, deterministic: bool = False,
                 device: torch.device | str | None = None, trace: bool = True) -> None:
        if getattr(policy, "is_sequence", False):
            raise APIUsageError(f"player {player_id!r} is a {type(policy).__name__}, which acts towards a target "
                                "return from the rewards of its own episodes; matches and leagues do not play it: "
                                "evaluate it alone with shoal eval RUN --target-return RETURN")
        self.player_id = player_id
        self.policy = policy.eval()
        self.deterministic = deterministic
        self.device = torch.device(device) if device is not None else next(policy.parameters()).device
        layout = getattr(policy, "action_layout", None)
        self.continuous = layout is not None and layout.kind in ("continuous", "hybrid")
        self.trace = trace and not deterministic
        self.acting: RowActor | None = None
        self._rows: np.ndarray | None = None  # 0..num_rows-1, the full batch a tracing player runs

    @property
    def recurrent(self) -> bool:
        """The policy keeps an LSTM state per row."""
        return bool(getattr(self.policy, "is_recurrent", False))

    def bind(self, num_rows: int, agents_per_env: int) -> None:
        # a frozen policy's trace never goes stale
        self.acting = RowActor(self.policy, num_rows, agents_per_env, self.device, continuous=self.continuous,
                               deterministic=self.deterministic, trace=self.trace)
        self._rows = np.arange(num_rows, dtype=np.int64)

    def act(self, obs: np.ndarray, action_masks: np.ndarray | None, rows: np.ndarray,
            starts: np.ndarray) -> np.ndarray:
        if self.acting is None or self._rows is None:
            raise APIUsageError(f"player {self.player_id!r}: call bind(num_rows, agents_per_env) first")
        rows = np.asarray(rows, np.int64)
        starts = np.asarray(starts, np.bool_)
        n = len(self._rows)
        if not self.acting.forward.replays_traces or len(rows) == n:
            return self.acting.act(obs, rows, starts=starts, action_masks=action_masks).env_actions
        # every row at a fixed batch shape (see trace): the others see zeros, every action legal, and keep
        # their state (not live, not starting)
        full = np.zeros((n, *obs.shape[1:]), obs.dtype)
        full[rows] = obs
        live = np.zeros(n, np.bool_)
        live[rows] = True
        full_starts = np.zeros(n, np.bool_)
        full_starts[rows] = starts
        masks = None
        if action_masks is not None:
            masks = np.ones((n, *action_masks.shape[1:]), np.bool_)
            masks[rows] = action_masks
        acted = self.acting.act(full, self._rows, live, starts=full_starts, action_masks=masks)
        return acted.env_actions[rows]

    def get_rows_state(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """The LSTM state of ``rows`` as numpy ``(h, c)``, float32 ``[len(rows), lstm_size]`` each (None if not
        recurrent)."""
        return None if self.acting is None else self.acting.rows_state(rows)

    def set_rows_state(self, rows: np.ndarray, state: tuple[np.ndarray, np.ndarray]) -> None:
        """Write ``(h, c)`` float32 ``[len(rows), lstm_size]`` into the LSTM state of ``rows``."""
        if self.acting is not None:
            self.acting.set_rows_state(rows, state)


def frozen_copy(policy: nn.Module, state_dict: dict[str, Any] | None = None) -> nn.Module:
    """A deep copy of ``policy`` (with ``state_dict`` loaded when given) in eval mode, without gradients."""
    import copy

    frozen = copy.deepcopy(policy)
    if state_dict is not None:
        frozen.load_state_dict(state_dict)
    frozen.eval()
    frozen.requires_grad_(False)
    return frozen
