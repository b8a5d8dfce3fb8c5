"""Scripted players for league anchors and evaluation: a random player and simple per-game heuristics.

Every scripted policy here is a plain numpy function over a batch of the emulator's flat observation rows::

    policy(obs, action_masks, rng) -> actions
      obs           [B, flat_size]  the emulator's flat rows (the layout's flat dtype, e.g. int8 boards)
      action_masks  bool [B, W]     legal actions (True = legal), or None when the env gives none
      rng           numpy Generator (ties and fallbacks are broken at random)
      actions       int64 [B]

Heuristics (``heuristic_for``), keyed by the PettingZoo env name without its version suffix:

* ``connect_four``: one-step lookahead: play a winning move if there is one, else block a column where the
  opponent would win next, else a random legal move.
* ``tictactoe``: the same one-step lookahead on the 3x3 board.
* ``texas_holdem`` (limit): raise with a pair among the visible cards or an ace/king, else check (or call);
  never folds.

Rock-paper-scissors has no sensible heuristic (uniform random *is* its Nash equilibrium): only ``random``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "HEURISTICS",
    "ScriptedPolicy",
    "connect_four_heuristic",
    "env_name",
    "heuristic_for",
    "random_policy",
    "texas_holdem_heuristic",
    "tictactoe_heuristic",
]

ScriptedPolicy = Callable[[np.ndarray, "np.ndarray | None", np.random.Generator], np.ndarray]


def random_policy(num_actions: int) -> ScriptedPolicy:
    """Uniformly random legal actions of a ``Discrete(num_actions)`` action space."""

    def act(obs: np.ndarray, action_masks: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        return _random_legal(len(obs), num_actions, action_masks, rng)

    return act


def _random_legal(batch: int, num_actions: int, action_masks: np.ndarray | None,
                  rng: np.random.Generator) -> np.ndarray:
    """int64 ``[batch]``: a uniformly random legal action per row (any action where a row has no legal one)."""
    u = rng.random((batch, num_actions))
    if action_masks is not None:
        legal = action_masks[:, :num_actions]
        u = np.where(legal | ~legal.any(1, keepdims=True), u, -1.0)
    return u.argmax(1).astype(np.int64)


def _pick(preferred: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Random choice among the True entries of each row of ``preferred`` ``[B, n]``: ``(choice, has_any)``."""
    return np.where(preferred, u, -1.0).argmax(1), preferred.any(1)


def _windows(rows: int, cols: int, length: int) -> np.ndarray:
    """Flat cell indices ``[num_windows, length]`` of every horizontal, vertical and diagonal line."""
    out = []
    for r in range(rows):
        for c in range(cols):
            for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
                cells = [(r + i * dr, c + i * dc) for i in range(length)]
                if all(0 <= rr < rows and 0 <= cc < cols for rr, cc in cells):
                    out.append([rr * cols + cc for rr, cc in cells])
    return np.asarray(out, np.int64)


class _Lines:
    """Winning lines of a board: which empty cells complete a line of a player (one matmul per batch)."""

    def __init__(self, rows: int, cols: int, length: int) -> None:
        self.cells = rows * cols
        self.length = length
        self.windows = _windows(rows, cols, length)  # [L, length]
        contains = np.zeros((self.cells, len(self.windows)), np.int32)
        for w, cells in enumerate(self.windows):
            contains[cells, w] = 1
        self.contains_t = contains.T  # [L, cells]

    def completing(self, stones: np.ndarray, empty: np.ndarray) -> np.ndarray:
        """bool ``[B, cells]``: empty cells where a stone completes a line of ``stones`` (int ``[B, cells]``)."""
        counts = stones[:, self.windows].sum(-1)  # [B, L]
        # a window holding length-1 stones is completed by its remaining cell, if that one is empty
        open_ = (counts == self.length - 1).astype(np.int32)
        return ((open_ @ self.contains_t) > 0) & empty


_C4 = _Lines(6, 7, 4)
_TTT = _Lines(3, 3, 3)


def connect_four_heuristic(obs: np.ndarray, action_masks: np.ndarray | None,
                           rng: np.random.Generator) -> np.ndarray:
    """Connect four one-step lookahead: win if possible, block if needed, else random (see module docs).

    ``obs`` int8 ``[B, 84]``: PettingZoo's ``[6, 7, 2]`` board (row 0 on top; plane 0 the mover's stones, plane 1
    the opponent's) flattened.
    """
    board = obs.reshape(len(obs), 6, 7, 2).astype(np.int32)
    own, opp = board[..., 0], board[..., 1]
    empty = (own + opp) == 0  # [B, 6, 7]
    # landing row of each column: the lowest empty cell (pieces fall to row 5)
    filled_below = np.cumsum(empty[:, ::-1, :], axis=1)[:, ::-1, :]  # empty cells at or below, per column
    landing = empty & (filled_below == 1)  # [B, 6, 7]: exactly one empty cell at or below -> the lowest
    legal = empty[:, 0, :]
    if action_masks is not None:
        legal = legal & action_masks[:, :7]
    flat_landing = landing.reshape(len(obs), 42)
    win_cell = _C4.completing(own.reshape(-1, 42), flat_landing).reshape(-1, 6, 7)
    block_cell = _C4.completing(opp.reshape(-1, 42), flat_landing).reshape(-1, 6, 7)
    win = win_cell.any(1) & legal
    block = block_cell.any(1) & legal
    u = rng.random((len(obs), 7))
    win_choice, can_win = _pick(win, u)
    block_choice, can_block = _pick(block, u)
    other, _ = _pick(legal | ~legal.any(1, keepdims=True), u)
    return np.where(can_win, win_choice, np.where(can_block, block_choice, other)).astype(np.int64)


def tictactoe_heuristic(obs: np.ndarray, action_masks: np.ndarray | None,
                        rng: np.random.Generator) -> np.ndarray:
    """Tic-tac-toe one-step lookahead: win if possible, block if needed, else random.

    ``obs`` int8 ``[B, 18]``: PettingZoo's ``[3, 3, 2]`` board (plane 0 the mover's marks) flattened; action ``a``
    marks cell ``a`` of the flattened 3x3 board.
    """
    board = obs.reshape(len(obs), 9, 2).astype(np.int32)
    own, opp = board[..., 0], board[..., 1]
    empty = (own + opp) == 0
    legal = empty if action_masks is None else empty & action_masks[:, :9]
    win = _TTT.completing(own, legal)
    block = _TTT.completing(opp, legal)
    u = rng.random((len(obs), 9))
    win_choice, can_win = _pick(win, u)
    block_choice, can_block = _pick(block, u)
    other, _ = _pick(legal | ~legal.any(1, keepdims=True), u)
    return np.where(can_win, win_choice, np.where(can_block, block_choice, other)).astype(np.int64)


_CALL, _RAISE, _FOLD, _CHECK = 0, 1, 2, 3


def texas_holdem_heuristic(obs: np.ndarray, action_masks: np.ndarray | None,
                           rng: np.random.Generator) -> np.ndarray:
    """Limit hold'em: raise with a pair among the visible cards or an ace or king, else check/call; never fold.

    ``obs`` float32 ``[B, 72]``: 52 card indicators (suit-major, rank ``index % 13`` with 0 = ace, 12 = king)
    for the hand and the public cards, then the chips raised in each of the 4 rounds. Actions: 0 call, 1 raise,
    2 fold, 3 check.
    """
    cards = obs[:, :52].reshape(len(obs), 4, 13) > 0.5
    per_rank = cards.sum(1)  # [B, 13]
    strong = (per_rank >= 2).any(1) | cards[:, :, 0].any(1) | cards[:, :, 12].any(1)
    legal = np.ones((len(obs), 4), np.bool_) if action_masks is None else action_masks[:, :4]
    passive = np.where(legal[:, _CHECK], _CHECK, np.where(legal[:, _CALL], _CALL, -1))
    aggressive = np.where(legal[:, _RAISE], _RAISE, passive)
    choice = np.where(strong, aggressive, passive)
    fallback = _random_legal(len(obs), 4, action_masks, rng)
    return np.where(choice >= 0, choice, fallback).astype(np.int64)


#: env name (without version) -> heuristic
HEURISTICS: dict[str, ScriptedPolicy] = {
    "connect_four": connect_four_heuristic,
    "tictactoe": tictactoe_heuristic,
    "texas_holdem": texas_holdem_heuristic,
}


def env_name(env: Any) -> str:
    """An env's name without the version suffix: ``metadata["name"]`` (``"connect_four_v3"`` -> ``"connect_four"``),
    else its class name."""
    name = str(getattr(env, "metadata", {}).get("name") or type(getattr(env, "unwrapped", env)).__name__)
    return re.sub(r"_v\d+$", "", name)


def heuristic_for(name: str) -> ScriptedPolicy | None:
    """The heuristic of the env named ``name`` (see :func:`env_name`), or None when it has none."""
    return HEURISTICS.get(re.sub(r"_v\d+$", "", name))
