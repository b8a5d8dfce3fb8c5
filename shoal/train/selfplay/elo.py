"""ELO ratings and the league table of a self-play run (pure Python, no torch).

Two-player games use the textbook update. With ratings ``R_a``, ``R_b``, the expected score of ``a`` is
``E_a = 1 / (1 + 10 ** ((R_b - R_a) / 400))``; after a game where ``a`` scores ``S_a`` (1 win, 0.5 draw, 0 loss)
``R_a' = R_a + K (S_a - E_a)`` and ``R_b' = R_b + K ((1 - S_a) - (1 - E_a))``.

Games with more than two players (or teams) are rated with the Plackett-Luce model of `openskill
<https://pypi.org/project/openskill/>`_ (``pip install shoal[league]``), set on the ELO scale: ``mu`` starts at
:data:`DEFAULT_RATING` and ``beta = 400 / (ln 10 * sqrt 2)``, so that between two players of settled ratings its
win probability is ELO's ``1 / (1 + 10 ** (-d / 400))``. A player's ``rating`` is its ``mu``; its uncertainty
``sigma`` starts at :data:`DEFAULT_SIGMA` and shrinks with its games. Every pair of players of such a game is also
tallied in the W/D/L records (1/0.5/0 by comparing their results).

Fixed-rating anchors (scripted baselines such as a random player) keep their rating; their opponents still move.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shoal.errors import APIUsageError, CheckpointError

__all__ = ["LeagueTable", "Player", "elo_update", "expected_score", "pairwise_scores"]

DEFAULT_RATING = 1000.0
DEFAULT_SIGMA = DEFAULT_RATING / 3  # openskill's default mu / sigma ratio
#: openskill's performance spread on the ELO scale: logistic win probability with scale 400 / ln 10 for two
#: players of certain ratings, whose combined spread is sqrt(2) * beta
ELO_BETA = 400.0 / (math.log(10.0) * math.sqrt(2.0))
_FIXED_SIGMA = 1.0  # anchors' ratings are known: a near-zero uncertainty


def expected_score(rating_a: float, rating_b: float) -> float:
    """Expected score of a player rated ``rating_a`` against one rated ``rating_b`` (in ``[0, 1]``)."""
    return 1.0 / (1.0 + 10.0 ** ((rating_b - rating_a) / 400.0))


def elo_update(rating_a: float, rating_b: float, score_a: float, k: float = 32.0) -> tuple[float, float]:
    """Ratings of ``a`` and ``b`` after one game in which ``a`` scored ``score_a`` (1 win, 0.5 draw, 0 loss)."""
    if not 0.0 <= score_a <= 1.0:
        raise APIUsageError(f"score_a={score_a} must lie in [0, 1] (1 win, 0.5 draw, 0 loss)")
    expected_a = expected_score(rating_a, rating_b)
    return rating_a + k * (score_a - expected_a), rating_b + k * ((1.0 - score_a) - (1.0 - expected_a))


def pairwise_scores(results: Sequence[float]) -> list[tuple[int, int, float]]:
    """Split one N-player game into pairwise games: ``(i, j, score_i)`` for every ``i < j``.

    ``results`` are higher-is-better outcomes (e.g. episode returns); equal results are draws.
    """
    pairs = []
    for i in range(len(results)):
        for j in range(i + 1, len(results)):
            score = 1.0 if results[i] > results[j] else 0.0 if results[i] < results[j] else 0.5
            pairs.append((i, j, score))
    return pairs


@dataclass
class Player:
    """One entry of the league: a learner snapshot or a scripted baseline.

    Attributes:
        rating: current ELO rating.
        sigma: uncertainty of the rating in games of more than two players (openskill), None before the first.
        games: games played.
        fixed: anchors (scripted baselines) keep their rating.
        parent: id of the snapshot this one was taken after (its initial rating), if any.
        path: checkpoint path of a snapshot (relative to the run directory), if any.
        record: ``{opponent_id: [wins, draws, losses]}``.
        retired: a snapshot that left the opponent pool (its path cleared; its file goes once no kept checkpoint
            names it): it keeps its row in the table, but rating-history entries written after it left omit it.
    """

    rating: float = DEFAULT_RATING
    sigma: float | None = None
    games: int = 0
    fixed: bool = False
    parent: str | None = None
    path: str | None = None
    record: dict[str, list[int]] = field(default_factory=dict)
    retired: bool = False


class LeagueTable:
    """Ratings, game records and rating history of every player in a league.

    Args:
        k: the ELO K factor.
    """

    def __init__(self, k: float = 32.0) -> None:
        self.k = k
        self.players: dict[str, Player] = {}
        self.history: list[dict[str, Any]] = []  # [{"games": total_games, "ratings": {id: rating}}]
        self.total_games = 0

    # ---- membership -------------------------------------------------------------------------------------------

    def add(self, player_id: str, *, parent: str | None = None, rating: float | None = None, fixed: bool = False,
            path: str | None = None) -> Player:
        """Add a player. A snapshot enters with its ``parent``'s rating unless ``rating`` is given."""
        if player_id in self.players:
            raise APIUsageError(f"player {player_id!r} is already in the league; pick a new id")
        if rating is None:
            rating = self.players[parent].rating if parent in self.players else DEFAULT_RATING
        player = Player(rating=float(rating), fixed=fixed, parent=parent, path=path)
        self.players[player_id] = player
        self._snapshot()
        return player

    def __contains__(self, player_id: str) -> bool:
        return player_id in self.players

    def rating(self, player_id: str) -> float:
        return self._get(player_id).rating

    def _get(self, player_id: str) -> Player:
        try:
            return self.players[player_id]
        except KeyError:
            raise APIUsageError(f"unknown player {player_id!r}; the league has {sorted(self.players)}") from None

    # ---- results ----------------------------------------------------------------------------------------------

    def record_game(self, a: str, b: str, score_a: float, *, only: str | None = None) -> None:
        """Rate one two-player game in which ``a`` scored ``score_a`` against ``b``; with ``only`` (``a`` or ``b``)
        the other player's rating stays (its record still counts the game)."""
        if only is not None and only not in (a, b):
            raise APIUsageError(f"only={only!r} must be one of the two players {a!r}, {b!r}")
        self._pair(a, b, score_a, self.k, only)
        self.total_games += 1
        self._snapshot()

    def record_multiplayer(self, player_ids: Sequence[str], results: Sequence[float]) -> None:
        """Rate one game of ``N >= 2`` players (or teams) from their results (higher is better) with openskill's
        Plackett-Luce model on the ELO scale (module docstring); fixed anchors keep their rating."""
        if len(player_ids) != len(results) or len(player_ids) < 2:
            raise APIUsageError("record_multiplayer needs one result per player and at least two players")
        try:
            from openskill.models import PlackettLuce
        except ImportError:
            raise APIUsageError("rating games of more than two players needs openskill: pip install 'shoal[league]'") \
                from None
        model = PlackettLuce(mu=DEFAULT_RATING, sigma=DEFAULT_SIGMA, beta=ELO_BETA, tau=DEFAULT_SIGMA / 100)
        players = [self._get(pid) for pid in player_ids]
        teams = [[model.rating(mu=p.rating, sigma=_FIXED_SIGMA if p.fixed else (p.sigma or DEFAULT_SIGMA))]
                 for p in players]
        rated = model.rate(teams, scores=[float(r) for r in results])
        for player, (new,) in zip(players, rated, strict=True):
            if not player.fixed:
                player.rating, player.sigma = float(new.mu), float(new.sigma)
            player.games += 1
        for i, j, score in pairwise_scores(results):
            self._tally(player_ids[i], player_ids[j], score)
        self.total_games += 1
        self._snapshot()

    def _pair(self, a: str, b: str, score_a: float, k: float, only: str | None = None) -> None:
        pa, pb = self._get(a), self._get(b)
        new_a, new_b = elo_update(pa.rating, pb.rating, score_a, k)
        if not pa.fixed and only in (None, a):
            pa.rating = new_a
        if not pb.fixed and only in (None, b):
            pb.rating = new_b
        self._tally(a, b, score_a)
        pa.games += 1
        pb.games += 1

    def _tally(self, a: str, b: str, score_a: float) -> None:
        slot = 0 if score_a == 1.0 else 2 if score_a == 0.0 else 1
        self.players[a].record.setdefault(b, [0, 0, 0])[slot] += 1
        self.players[b].record.setdefault(a, [0, 0, 0])[2 - slot] += 1

    def _snapshot(self) -> None:
        self.history.append({"games": self.total_games,
                             "ratings": {pid: p.rating for pid, p in self.players.items() if not p.retired}})

    def retire(self, player_id: str) -> None:
        """Mark ``player_id`` as out of the pool: its row stays, its path is cleared (the league deletes the file
        once no kept checkpoint names it) and later history entries leave it out, so the history grows with the
        pool, not with every snapshot taken."""
        player = self.players[player_id]
        player.retired, player.path = True, None

    # ---- views and persistence --------------------------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        """One dict per player, best rating first: id, rating, games, wins, draws, losses, fixed, retired."""
        out = []
        for pid, p in sorted(self.players.items(), key=lambda item: -item[1].rating):
            wins, draws, losses = (sum(r[i] for r in p.record.values()) for i in range(3))
            out.append({"id": pid, "rating": round(p.rating, 1), "games": p.games, "wins": wins, "draws": draws,
                        "losses": losses, "fixed": p.fixed, "retired": p.retired})
        return out

    def format(self) -> str:
        """The table as aligned text."""
        lines = [f"{'player':<24}{'rating':>9}{'games':>8}{'W':>7}{'D':>7}{'L':>7}"]
        for row in self.rows():
            name = row["id"] + (" *" if row["fixed"] else " -" if row["retired"] else "")
            lines.append(f"{name:<24}{row['rating']:>9.1f}{row['games']:>8}{row['wins']:>7}{row['draws']:>7}"
                         f"{row['losses']:>7}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "total_games": self.total_games, "history": self.history,
                "players": {pid: asdict(p) for pid, p in self.players.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LeagueTable:
        table = cls(k=float(data["k"]))
        table.total_games = int(data["total_games"])
        table.history = list(data["history"])
        table.players = {pid: Player(**p) for pid, p in data["players"].items()}
        return table

    def save(self, path: str | Path) -> None:
        """Write the table as JSON (write-then-rename: a crash never leaves a half-written file)."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> LeagueTable:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"cannot read the league table at {path}: {exc}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LeagueTable) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]
