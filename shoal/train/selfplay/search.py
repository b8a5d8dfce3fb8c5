"""Search players for the classic board games: an exact tic-tac-toe solver and a depth-limited alpha-beta player
for connect four. Both are :data:`~shoal.train.selfplay.heuristics.ScriptedPolicy` functions over the emulator's
flat observation rows, so they serve as league anchors (``league_opponents``) and as ``shoal eval --opponent``.

Boards are read from PettingZoo's observation (``[rows, cols, 2]`` int8; plane 0 the mover's stones, plane 1 the
opponent's), so no env internals are touched.

``solver`` (tic-tac-toe)
    Negamax to the end of the game, memoized per position (tic-tac-toe has 5,478 legal positions). A
    position's value for the mover is ``+(1 + empty cells)`` for a forced win, ``-(1 + empty cells)`` for a
    forced loss and 0 for a draw: wins come as early and losses as late as possible. Among equally valued moves
    one is drawn at random, so the solver is exact (never loses, draws against itself) and still varies its
    games.

``alphabeta[@depth]`` (connect four; ``depth`` plies, default :data:`DEFAULT_DEPTH`)
    Negamax with alpha-beta pruning on bitboards (7 bits per column: 6 cells and a sentinel), moves ordered
    centre first. A won game scores ``WIN + plies left``; at the depth limit a position scores the number of
    empty cells that would complete a line of four for the mover minus those for the opponent, plus a small bonus
    for stones in the centre column. Among root moves with the best score one is drawn at random.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from shoal.errors import APIUsageError
from shoal.train.config import SEARCH_BASELINES, is_baseline
from shoal.train.selfplay.heuristics import ScriptedPolicy, _random_legal

__all__ = [
    "DEFAULT_DEPTH",
    "SEARCH_PLAYERS",
    "alphabeta_connect_four",
    "connect_four_bitboards",
    "connect_four_scores",
    "search_player",
    "tictactoe_solver",
    "tictactoe_values",
]

DEFAULT_DEPTH = 4
#: search player names (without ``@depth``) -> the games they play
SEARCH_PLAYERS: dict[str, tuple[str, ...]] = {"solver": ("tictactoe",), "alphabeta": ("connect_four",)}

# ---- tic-tac-toe -------------------------------------------------------------------------------------------------

_TTT_LINES = [sum(1 << c for c in line) for line in
              ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))]
_FULL = (1 << 9) - 1


def _ttt_won(stones: int) -> bool:
    return any(stones & line == line for line in _TTT_LINES)


@cache
def _ttt_value(own: int, opp: int) -> int:
    """Value for the player to move with stone masks ``own`` and ``opp`` (9 bits each, cell = flat index)."""
    empty = _FULL & ~(own | opp)
    if _ttt_won(opp):
        return -(1 + bin(empty).count("1"))
    if not empty:
        return 0
    return max(-_ttt_value(opp, own | (1 << c)) for c in range(9) if empty >> c & 1)


def tictactoe_values(own: int, opp: int) -> dict[int, int]:
    """``{cell: value}`` of every legal move of the mover (the value of the position after it, for the mover).

    ``own``, ``opp``: 9-bit masks of the mover's and the opponent's marks (bit ``i`` = cell ``i`` of the
    flattened 3x3 board, which is also the action that marks it).
    """
    empty = _FULL & ~(own | opp)
    if _ttt_won(own) or _ttt_won(opp):
        return {}
    return {c: -_ttt_value(opp, own | (1 << c)) for c in range(9) if empty >> c & 1}


def tictactoe_solver(obs: np.ndarray, action_masks: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """Perfect tic-tac-toe play. ``obs`` int8 ``[B, 18]``: PettingZoo's ``[3, 3, 2]`` board flattened; returns
    int64 ``[B]`` actions (cells)."""
    board = np.asarray(obs).reshape(len(obs), 9, 2) > 0
    weights = 1 << np.arange(9)
    owns, opps = (board[..., 0] @ weights).tolist(), (board[..., 1] @ weights).tolist()
    out = _random_legal(len(obs), 9, action_masks, rng)  # finished or illegal boards: any legal move
    for i, (own, opp) in enumerate(zip(owns, opps, strict=True)):
        values = tictactoe_values(own, opp)
        if action_masks is not None:
            values = {c: v for c, v in values.items() if action_masks[i, c]}
        if values:
            best = max(values.values())
            choices = [c for c, v in values.items() if v == best]
            out[i] = choices[int(rng.integers(len(choices)))]
    return out


# ---- connect four ------------------------------------------------------------------------------------------------

_ROWS, _COLS, _H = 6, 7, 7  # bit (col * _H + height) holds the stone at that height (0 = bottom) of column col
_BOTTOM = sum(1 << (c * _H) for c in range(_COLS))
_BOARD = _BOTTOM * ((1 << _ROWS) - 1)
_COLUMN = [((1 << _ROWS) - 1) << (c * _H) for c in range(_COLS)]
_TOP = [1 << (c * _H + _ROWS - 1) for c in range(_COLS)]
_ORDER = (3, 2, 4, 1, 5, 0, 6)
_CENTRE = _COLUMN[3]
WIN = 10_000
_INF = 10**9


def connect_four_bitboards(obs: np.ndarray) -> list[tuple[int, int]]:
    """``(own, opp)`` bitboards of each row of ``obs`` (int8 ``[B, 84]``: PettingZoo's ``[6, 7, 2]`` board with
    row 0 on top, flattened)."""
    board = np.asarray(obs).reshape(len(obs), _ROWS, _COLS, 2) > 0
    # bit index of cell (row r from the top, column c): c * 7 + (5 - r)
    index = (np.arange(_COLS)[None, :] * _H + (_ROWS - 1 - np.arange(_ROWS))[:, None]).reshape(-1)
    weights = np.array([1 << int(i) for i in index], dtype=object)
    flat = board.reshape(len(obs), _ROWS * _COLS, 2).astype(object)
    own = (flat[..., 0] * weights).sum(1)
    opp = (flat[..., 1] * weights).sum(1)
    return [(int(a), int(b)) for a, b in zip(own, opp, strict=True)]


def _won(p: int) -> bool:
    for shift in (1, _H, _H - 1, _H + 1):  # vertical, horizontal, the two diagonals
        m = p & (p >> shift)
        if m & (m >> (2 * shift)):
            return True
    return False


def _threats(p: int, mask: int) -> int:
    """Empty cells that complete a line of four of ``p``."""
    r = (p << 1) & (p << 2) & (p << 3)
    for s in (_H, _H - 1, _H + 1):
        q = (p << s) & (p << 2 * s)
        r |= q & (p << 3 * s)
        r |= q & (p >> s)
        q = (p >> s) & (p >> 2 * s)
        r |= q & (p << s)
        r |= q & (p >> 3 * s)
    return r & (_BOARD ^ mask)


def _evaluate(own: int, opp: int) -> int:
    mask = own | opp
    return 4 * (_threats(own, mask).bit_count() - _threats(opp, mask).bit_count()) + \
        (own & _CENTRE).bit_count() - (opp & _CENTRE).bit_count()


def _negamax(own: int, opp: int, depth: int, alpha: int, beta: int) -> int:
    mask = own | opp
    moves = [c for c in _ORDER if not mask & _TOP[c]]
    if not moves:
        return 0
    children = []
    for c in moves:
        stone = (mask + (1 << (c * _H))) & _COLUMN[c]
        if _won(own | stone):
            return WIN + depth
        children.append(own | stone)
    if depth <= 1:
        return max(-_evaluate(opp, child) for child in children)
    best = -_INF
    for child in children:
        score = -_negamax(opp, child, depth - 1, -beta, -alpha)
        if score > best:
            best = score
            if score > alpha:
                alpha = score
                if alpha >= beta:
                    break
    return best


def connect_four_scores(own: int, opp: int, depth: int) -> dict[int, int]:
    """``{column: score}`` of each legal move of the mover after a ``depth``-ply search (scores are exact for the
    best moves; a lower score only says the move is worse)."""
    mask = own | opp
    if _won(own) or _won(opp):
        return {}
    scores: dict[int, int] = {}
    best = -_INF
    for c in _ORDER:
        if mask & _TOP[c]:
            continue
        child = own | ((mask + (1 << (c * _H))) & _COLUMN[c])
        if _won(child):
            score = WIN + depth
        elif depth <= 1:
            score = -_evaluate(opp, child)
        else:
            # window (best - 1, inf): ties with the best move so far keep their exact score
            score = -_negamax(opp, child, depth - 1, -_INF, -(best - 1))
        scores[c] = score
        best = max(best, score)
    return scores


def alphabeta_connect_four(depth: int = DEFAULT_DEPTH) -> ScriptedPolicy:
    """A connect-four player searching ``depth`` plies (>= 1) with alpha-beta (see the module docstring)."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise APIUsageError(f"alphabeta search depth must be a positive int, got {depth!r}")

    def act(obs: np.ndarray, action_masks: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        out = _random_legal(len(obs), _COLS, action_masks, rng)
        for i, (own, opp) in enumerate(connect_four_bitboards(obs)):
            scores = connect_four_scores(own, opp, depth)
            if action_masks is not None:
                scores = {c: v for c, v in scores.items() if action_masks[i, c]}
            if scores:
                best = max(scores.values())
                choices = sorted(c for c, v in scores.items() if v == best)
                out[i] = choices[int(rng.integers(len(choices)))]
        return out

    return act


# ---- names -------------------------------------------------------------------------------------------------------


def search_player(name: str, game: str) -> ScriptedPolicy:
    """The search player ``name`` (``solver``, ``alphabeta`` or ``alphabeta@<depth>``) for the game ``game`` (env
    name without version, e.g. ``"connect_four"``)."""
    base, _, depth = name.partition("@")
    if base not in SEARCH_BASELINES or not is_baseline(name):
        raise APIUsageError(f"unknown search player {name!r}; valid: 'solver' (tictactoe), 'alphabeta' or "
                            "'alphabeta@<depth>' (connect_four)")
    if game not in SEARCH_PLAYERS[base]:
        valid = ", ".join(f"{n!r} for {'/'.join(g)}" for n, g in SEARCH_PLAYERS.items())
        raise APIUsageError(f"{name!r} does not play {game!r}; search players: {valid}")
    if base == "solver":
        return tictactoe_solver
    return alphabeta_connect_four(int(depth) if depth else DEFAULT_DEPTH)
