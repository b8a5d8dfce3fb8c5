"""Self-play leagues: the learner plays PettingZoo games against frozen past selves and scripted baselines, and
every finished game updates the ELO ratings of a :class:`~shoal.train.selfplay.elo.LeagueTable`.

    shoal train pettingzoo.classic.connect_four_v3 --league --league-opponents self:0.8,uniform:0.2
    shoal league runs/connect_four --plot
    shoal eval runs/connect_four --opponent alphabeta@4 --episodes 200

How it plugs into the trainer
    With ``TrainConfig.league`` the :class:`~shoal.train.loop.trainer.Trainer` holds a :class:`League` as
    ``trainer.league`` and asks it, for every env result: which live rows the learner drives
    (:meth:`League.learner_masks`: only those are recorded in the rollout buffer and advance the learner's LSTM
    state) and what the other live rows do (:meth:`League.act` overwrites their actions with the opponents'). The
    learner's forward pass still runs over every row (a fixed batch shape, so its traces are reused); each distinct
    opponent gets one batched forward over its rows per step.

Seats (per env, per episode)
    When an env starts an episode (its first reset, or a result where a row's info holds ``"reset_info"``: the
    emulator's auto-reset) the league first rates the game that just ended, then draws the new seating: the
    learner takes one occupied slot uniformly at random, every other slot gets an opponent drawn from the mix
    (:mod:`shoal.train.selfplay.opponents`); a ``self`` draw seats the live learner there too, and its rows are
    learner rows like the first. Opponents therefore change only at episode boundaries of their env, and
    their recurrent state is reset there (``starts``). Rows of slots with no agent are never learner rows.

Ratings
    The live learner is the player ``"learner"``. Every ``league_snapshot_interval`` updates (and once before training)
    a frozen copy joins the pool as ``snapshot-<update>`` with its parent's (the learner's) current rating, and plays
    ``league_rating_games`` games (seats alternating, sampling its actions) against the previous snapshot, one older
    snapshot of the pool drawn at random and every anchor: these games among frozen players rate the snapshots, so the
    table shows real progress. (The learner's own games move only its rating: it trains against its opponents and beats
    them more often than their strength against anyone else predicts.) A finished game is scored from the seats' episode
    returns (higher is better, equal is a draw): two distinct players get the textbook ELO update with ``league_k``;
    games of more distinct players (or teams) are rated by openskill's Plackett-Luce model on the ELO scale
    (:mod:`shoal.train.selfplay.elo`). Games the live learner plays against itself (the ``self`` strategy) are not
    rated. Scripted baselines named in the mix are fixed-rating anchors: ``random`` at 1000 (the rating every learner
    starts from: a fresh policy plays almost uniformly), ``heuristic`` at 1000 plus the ELO difference implied by its
    score in :data:`CALIBRATION_GAMES` games against ``random``, and the search players (``solver``,
    ``alphabeta[@depth]``) at the heuristic's rating plus the difference implied by their score against it, all measured
    when the league starts.

Pool size
    The pool holds at most ``league_pool_size`` snapshots (0: no limit): when a new one makes it larger, the oldest
    leave it. A snapshot that left is no longer drawn or rated against; its weights are freed once no game seats it (a
    game it plays when it leaves is finished) and its file is deleted once no kept checkpoint names it, so a long run's
    memory and disk stay bounded. It keeps its row in the table; rating-history entries written after it left omit it. A
    larger limit on resume lets the pool grow again but does not bring back snapshots that left.

Files in the run directory (written with every checkpoint, before it)
    ``league.json``: the table (ratings, games, W/D/L against every opponent, rating history: one entry per update);
    ``league/snapshot-00120.pt``: each snapshot a kept checkpoint names, in the checkpoint format (``shoal eval`` loads
    it). The checkpoint holds the league's full state (table, seats, opponents, their LSTM states, its RNG), so resuming
    continues exactly as an uninterrupted run on the serial backend.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shoal import __version__, vector
from shoal.errors import APIUsageError, CheckpointError
from shoal.train.config import LEAGUE_PRESETS_BEFORE_STORED_MIX, Mix, is_baseline
from shoal.train.runs.checkpoint import FORMAT, env_signature, find_checkpoint, load_checkpoint, save_checkpoint
from shoal.train.runs.evaluate import load_policy_from_checkpoint
from shoal.train.selfplay.elo import DEFAULT_RATING, LeagueTable, expected_score
from shoal.train.selfplay.heuristics import HEURISTICS, env_name, heuristic_for, random_policy
from shoal.train.selfplay.opponents import (
    OpponentSampler,
    Player,
    PolicyPlayer,
    ScriptedPlayer,
    frozen_copy,
    parse_mix,
)
from shoal.train.selfplay.search import search_player

__all__ = [
    "CALIBRATION_GAMES",
    "LEARNER",
    "League",
    "MatchResult",
    "elo_difference",
    "evaluate_match",
    "format_league",
    "load_league",
    "make_player",
    "make_scripted",
    "play_match",
    "plot_league",
    "wilson_interval",
]

log = logging.getLogger(__name__)

LEARNER = "learner"
SELF = "self"  # the opponent strategy that seats the live learner
#: Games of ``heuristic`` against ``random`` that fix the heuristic anchor's rating.
CALIBRATION_GAMES = 400
LEAGUE_FILE = "league.json"
SNAPSHOT_DIR = "league"


class _Released:
    """What stays in :attr:`League.players` of a snapshot that left the pool once its weights are freed (indices
    into the list stay valid); no game seats it, so it never acts."""

    def __init__(self, player_id: str) -> None:
        self.player_id = player_id

    def bind(self, num_rows: int, agents_per_env: int) -> None:
        pass

    def act(self, obs: np.ndarray, action_masks: np.ndarray | None, rows: np.ndarray,
            starts: np.ndarray) -> np.ndarray:
        raise RuntimeError(f"internal error: {self.player_id} left the league's pool and was seated")


def _reset_rows(infos: Sequence[dict[str, Any]]) -> list[int]:
    """Rows whose info says their env auto-reset in this result (the emulator's ``"reset_info"``)."""
    return [k for k, info in enumerate(infos) if info and "reset_info" in info]


def _outcome(mine: float, others: Sequence[float]) -> int:
    """0 win, 1 draw, 2 loss: ``mine`` against the best of ``others``."""
    best = max(others)
    return 0 if mine > best else 1 if mine == best else 2


class League:
    """The self-play league of one training run (see the module docstring).

    Args:
        trainer: the :class:`~shoal.train.loop.trainer.Trainer` (its config, vector env, policy, env_fn, update and
            global_step are read).

    Attributes:
        table: the :class:`LeagueTable`.
        snapshots: ids of the learner's snapshots in the pool, oldest first (at most ``league_pool_size``).
        leaving: ids of snapshots that left the pool whose weights a game still seating them keeps (freed after).
        learner: bool ``[num_rows]``: the row is the learner's seat in its env's current episode.
        opponent: int64 ``[num_rows]``: index into ``players`` of the opponent driving the row (-1: none).
    """

    def __init__(self, trainer: Any) -> None:
        cfg = trainer.config
        vec = trainer.vecenv
        self.trainer = trainer
        self.agents_per_env = int(vec.agents_per_env)
        if self.agents_per_env < 2:
            raise APIUsageError(
                f"league=True needs a game with at least two agent slots per env (a PettingZoo env); "
                f"{cfg.env!r} has {self.agents_per_env}"
            )
        self.num_envs = int(vec.num_envs)
        self.num_rows = int(vec.num_agents)
        self.action_layout = vec.action_layout
        self.interval = int(cfg.league_snapshot_interval)
        self.pool_size = int(cfg.league_pool_size)
        self.rng = np.random.default_rng([int(cfg.seed), 0x1EA6])
        self.table = LeagueTable(k=cfg.league_k)
        self.table.add(LEARNER)
        self.players: list[Player] = []
        self.index: dict[str, int] = {}
        self.snapshots: list[str] = []
        self.leaving: list[str] = []
        # the snapshots (pool and leaving) each kept checkpoint names, newest last: their files stay
        self._checkpoint_pools: deque[list[str]] = deque(maxlen=int(cfg.keep_checkpoints))
        self._meta: dict[str, dict[str, int]] = {}
        self._unsaved: list[str] = []
        self._counts = np.zeros(3, np.int64)  # learner wins/draws/losses since the last scalars()
        self._anchors: dict[str, float] = {}  # calibrated anchor ratings, by baseline name
        env = trainer.env_fn()
        try:
            self._env_name = env_name(env)
        finally:
            env.close()
        self.sampler = OpponentSampler(parse_mix(cfg.league_opponents, self._env_name))
        for name in self.sampler.baselines:
            self._register(self._baseline(name, self.rng))
            self._anchors[name] = self._anchors.get(name) or self._anchor_rating(name)
            self.table.add(name, rating=self._anchors[name], fixed=True)
        self.reset_envs()
        self.snapshot()
        self._mark = len(self.table.history)

    # ---- players ---------------------------------------------------------------------------------------------

    def _baseline(self, name: str, rng: np.random.Generator) -> ScriptedPlayer:
        return make_scripted(name, self.action_layout, self._env_name, rng)

    def _anchor_rating(self, name: str) -> float:
        """Fixed rating of the baseline ``name``: ``random`` 1000; ``heuristic`` calibrated against ``random``; a
        search player against ``heuristic`` (each from :data:`CALIBRATION_GAMES` games, seats alternating)."""
        if name == "random":
            return DEFAULT_RATING
        weaker = "random" if name == "heuristic" else "heuristic"
        if weaker not in self._anchors:
            self._anchors[weaker] = self._anchor_rating(weaker)
        seed = int(self.trainer.config.seed) + 7_919
        player = self._baseline(name, np.random.default_rng([seed, 1]))
        reference = self._baseline(weaker, np.random.default_rng([seed, 2]))
        result = play_match(player, reference, self.trainer.env_fn, CALIBRATION_GAMES, seed=seed,
                            num_envs=16, max_agents=self.trainer.config.max_agents)
        rating = self._anchors[weaker] + elo_difference(result.score, result.games)
        log.info("league: %s scored %.3f against %s in %d games: anchor rating %.0f", name, result.score, weaker,
                 result.games, rating)
        return rating

    def _register(self, player: Player) -> None:
        player.bind(self.num_rows, self.agents_per_env)
        self.index[player.player_id] = len(self.players)
        self.players.append(player)

    def expected(self, player_id: str) -> float:
        """The learner's expected score against ``player_id`` from the current ratings."""
        return expected_score(self.table.rating(LEARNER), self.table.rating(player_id))

    def snapshot(self) -> str:
        """Freeze the learner's current weights into the pool as ``snapshot-<update>``; returns the id."""
        trainer = self.trainer
        pid = f"snapshot-{int(trainer.update):05d}"
        if pid in self.index:
            return pid
        self._register(PolicyPlayer(pid, frozen_copy(trainer.policy)))
        self.table.add(pid, parent=LEARNER, path=f"{SNAPSHOT_DIR}/{pid}.pt")
        self.snapshots.append(pid)
        self._meta[pid] = {"update": int(trainer.update), "global_step": int(trainer.global_step)}
        self._unsaved.append(pid)
        self._rate_snapshot(pid)  # against the previous snapshot even when it leaves the pool now
        self._shrink_pool()
        return pid

    def _shrink_pool(self) -> None:
        """Move the oldest snapshots beyond ``league_pool_size`` out of the pool (see the module docstring)."""
        while self.pool_size and len(self.snapshots) > self.pool_size:
            pid = self.snapshots.pop(0)
            self.table.retire(pid)
            self.leaving.append(pid)
        self._release()

    def _release(self) -> None:
        """Free the weights of the snapshots that left the pool and that no game seats any more."""
        if not self.leaving:
            return
        seated = set(self.opponent[self.opponent >= 0].tolist())
        for pid in list(self.leaving):
            i = self.index[pid]
            if i not in seated:
                self.leaving.remove(pid)
                del self.index[pid], self._meta[pid]
                if pid in self._unsaved:
                    self._unsaved.remove(pid)
                self.players[i] = _Released(pid)

    def _rate_snapshot(self, pid: str) -> None:
        """Play the new snapshot ``pid`` against the previous one, a random older one and every anchor
        (``league_rating_games`` games each) and rate those games: snapshots are rated among frozen players."""
        cfg = self.trainer.config
        games = int(cfg.league_rating_games)
        previous = self.snapshots[:-1]
        opponents = previous[-1:]
        if len(previous) > 1:
            opponents.append(previous[int(self.rng.integers(len(previous) - 1))])
        opponents += self.sampler.baselines
        if not games or not opponents:
            return
        # a few games each: eager acting beats making traces for them
        me = PolicyPlayer(pid, self.players[self.index[pid]].policy, trace=False)  # type: ignore[attr-defined]
        update = int(self.trainer.update)
        for n, other in enumerate(opponents):
            seed = int(cfg.seed) * 1_000_003 + update * 31 + n
            player = self.players[self.index[other]]
            opponent: Player = (PolicyPlayer(other, player.policy, trace=False)  # own rows
                                if isinstance(player, PolicyPlayer)
                                else self._baseline(other, np.random.default_rng([seed, 3])))
            result = play_match(me, opponent, self.trainer.env_fn, games, seed=seed, num_envs=min(games, 16),
                                max_agents=cfg.max_agents)
            # spread wins, draws and losses evenly over the sequence: sequential ELO updates depend on the order
            spread = [((i + 0.5) / count, score) for score, count in ((1.0, result.wins), (0.5, result.draws),
                                                                       (0.0, result.losses)) for i in range(count)]
            for _, score in sorted(spread):
                self.table.record_game(pid, other, score)

    # ---- the trainer's hooks ---------------------------------------------------------------------------------

    def reset_envs(self) -> None:
        """Forget every env's seating (fresh envs): opponents are drawn again at each env's next result."""
        r = self.num_rows
        self.learner = np.zeros(r, np.bool_)
        self.opponent = np.full(r, -1, np.int64)
        self.opp_starts = np.ones(r, np.bool_)
        self.results = np.zeros(r, np.float64)  # episode return of each row's finished agent
        self.finished = np.zeros(r, np.bool_)  # the row's agent finished its episode
        self.seated = np.zeros(self.num_envs, np.bool_)

    def finish(self, carry: Any) -> np.ndarray:
        """Take one env result (before anyone acts on it): collect results, rate finished games, reseat envs.

        Args:
            carry: the result (``rows``, ``env_ids``, ``terminals``, ``truncations``, ``infos``, ``agent_types``).

        Returns:
            bool ``[len(rows)]``: rows whose agent's episode ended in this result and was the learner's (their
            ``infos["episode"]`` are the learner's statistics).
        """
        rows, a = carry.rows, self.agents_per_env
        ended = carry.terminals | carry.truncations
        counted = ended & self.learner[rows]
        if ended.any():
            for k in np.flatnonzero(ended):
                episode = carry.infos[k].get("episode")
                if episode is not None:
                    self.results[rows[k]] = float(episode["return"])
                    self.finished[rows[k]] = True
        restart = ~self.seated[carry.env_ids]
        for k in _reset_rows(carry.infos):
            restart[k // a] = True
        for i in np.flatnonzero(restart):
            env = int(carry.env_ids[i])
            if self.seated[env]:
                self._rate(env)
            types = None if carry.agent_types is None else carry.agent_types[i * a : (i + 1) * a]
            self._seat(env, types)
        return counted

    def learner_masks(self, carry: Any) -> np.ndarray:
        """bool ``[len(rows)]``: live rows of ``carry`` the learner drives (the buffer's live mask)."""
        return carry.masks & self.learner[carry.rows]

    def act(self, carry: Any, actions: np.ndarray) -> None:
        """Overwrite the actions of ``carry``'s live opponent rows in ``actions`` (``[len(rows), ...]``, in place):
        one batched forward per distinct opponent."""
        rows = carry.rows
        local = np.flatnonzero(carry.masks & (self.opponent[rows] >= 0))
        if not len(local):
            return
        who = self.opponent[rows[local]]
        action_masks = carry.action_masks
        for p in np.unique(who):
            sel = local[who == p]
            global_rows = rows[sel]
            actions[sel] = self.players[p].act(carry.obs[sel], None if action_masks is None else action_masks[sel],
                                               global_rows, self.opp_starts[global_rows])
            self.opp_starts[global_rows] = False

    def after_update(self) -> None:
        """After each update: snapshot every ``league_snapshot_interval`` updates; one history entry per update."""
        trainer = self.trainer
        if trainer.update % self.interval == 0:
            self.snapshot()
        self._release()
        history = self.table.history
        if len(history) > self._mark + 1:
            del history[self._mark : -1]
        history[-1] = dict(history[-1], update=int(trainer.update), step=int(trainer.global_step))
        self._mark = len(history)

    def scalars(self) -> dict[str, float]:
        """Scalars to log (``league/...``); win/draw rates cover the learner's games since the last call."""
        out = {
            "league/learner_rating": self.table.rating(LEARNER),
            "league/latest_snapshot_rating": self.table.rating(self.snapshots[-1]),
            "league/snapshots": float(len(self.snapshots)),
            "league/games": float(self.table.total_games),
        }
        games = int(self._counts.sum())
        if games:
            out["league/win_rate"] = float(self._counts[0]) / games
            out["league/draw_rate"] = float(self._counts[1]) / games
        self._counts[:] = 0
        return out

    # ---- seating and rating ----------------------------------------------------------------------------------

    def _seat(self, env: int, agent_types: np.ndarray | None) -> None:
        a = self.agents_per_env
        rows = np.arange(env * a, (env + 1) * a)
        occupied = np.arange(a) if agent_types is None else np.flatnonzero(agent_types >= 0)
        if not len(occupied):
            occupied = np.arange(a)
        seat = int(occupied[self.rng.integers(len(occupied))])
        self.learner[rows] = False
        self.learner[rows[seat]] = True
        for slot in range(a):
            if slot != seat:
                pid = self.sampler.sample(self.rng, self.snapshots, self.expected)
                if pid == SELF:  # the live learner plays this seat too (and learns from it)
                    self.learner[rows[slot]] = True
                    self.opponent[rows[slot]] = -1
                else:
                    self.opponent[rows[slot]] = self.index[pid]
        self.opponent[rows[seat]] = -1
        self.opp_starts[rows] = True
        self.results[rows] = 0.0
        self.finished[rows] = False
        self.seated[env] = True

    def _rate(self, env: int) -> None:
        """Rate the game env ``env`` just finished, from its seats' episode returns."""
        a = self.agents_per_env
        rows = np.arange(env * a, (env + 1) * a)
        done = rows[self.finished[rows]]
        if not len(done):
            return
        ids = [LEARNER if self.learner[r] else self.players[self.opponent[r]].player_id for r in done]
        results = self.results[done]
        distinct = list(dict.fromkeys(ids))
        if LEARNER in distinct:  # the learner first: its records read "learner vs X"
            distinct.remove(LEARNER)
            distinct.insert(0, LEARNER)
        if len(distinct) < 2:
            return
        means = [float(np.mean([res for pid, res in zip(ids, results, strict=True) if pid == d])) for d in distinct]
        if len(distinct) == 2:
            score = 1.0 if means[0] > means[1] else 0.0 if means[0] < means[1] else 0.5
            # the learner trains against its opponents, so it beats snapshots more often than their strength against
            # anyone else predicts: with rating games among frozen players, its games move only its own rating
            only = LEARNER if distinct[0] == LEARNER and self.trainer.config.league_rating_games else None
            self.table.record_game(distinct[0], distinct[1], score, only=only)
        else:
            self.table.record_multiplayer(distinct, means)
        if distinct[0] == LEARNER:
            self._counts[_outcome(means[0], means[1:])] += 1

    # ---- persistence -----------------------------------------------------------------------------------------

    def save(self, run_dir: str | Path) -> None:
        """Write new snapshots to ``run_dir/league/`` (checkpoint format) and ``run_dir/league.json``. Called
        before each checkpoint is written; :meth:`prune` deletes files after it."""

        run_dir = Path(run_dir)
        folder = run_dir / SNAPSHOT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        trainer = self.trainer
        for pid in self._unsaved:
            policy = self.players[self.index[pid]].policy  # type: ignore[attr-defined]
            save_checkpoint(folder / f"{pid}.pt", {
                "format": FORMAT,
                "shoal_version": __version__,
                "config": trainer.config.to_dict(),
                "env_signature": env_signature(trainer.vecenv),
                "policy_class": f"{type(policy).__module__}.{type(policy).__qualname__}",
                "policy_config": dict(getattr(policy, "config", {})),
                "model": policy.state_dict(),
                "league_id": pid,
                **self._meta[pid],
            })
        self._unsaved = []
        self.table.save(run_dir / LEAGUE_FILE)

    def prune(self, run_dir: str | Path) -> None:
        """After a checkpoint is written: delete the files of snapshots that neither it nor the older checkpoints
        kept beside it (``keep_checkpoints``) name, so any kept checkpoint resumes (a snapshot that left the pool
        while seated is named by the checkpoints written while its game went on)."""
        self._checkpoint_pools.append([*self.leaving, *self.snapshots])
        keep = {f"{pid}.pt" for pool in self._checkpoint_pools for pid in pool}
        for stale in (Path(run_dir) / SNAPSHOT_DIR).glob("snapshot-*.pt"):
            if stale.name not in keep:
                stale.unlink(missing_ok=True)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the league exactly (stored in the trainer's checkpoints)."""
        opponents = [None if i < 0 else self.players[i].player_id for i in self.opponent.tolist()]
        states: dict[str, Any] = {}
        for p in np.unique(self.opponent[self.opponent >= 0]):
            player = self.players[p]
            if isinstance(player, PolicyPlayer) and player.recurrent:
                rows = np.flatnonzero(self.opponent == p)
                states[player.player_id] = (rows, player.get_rows_state(rows))
        return {
            "table": self.table.to_dict(),
            "snapshots": [{"id": pid, **self._meta[pid]} for pid in self.snapshots],
            "leaving": [{"id": pid, **self._meta[pid]} for pid in self.leaving],
            "checkpoint_pools": [list(pool) for pool in self._checkpoint_pools],
            "rng": self.rng.bit_generator.state,
            "learner": self.learner.copy(),
            "opponents": opponents,
            "opp_starts": self.opp_starts.copy(),
            "results": self.results.copy(),
            "finished": self.finished.copy(),
            "seated": self.seated.copy(),
            "opp_states": states,
            "counts": self._counts.copy(),
            # the mix as resolved ("auto" is a preset that may change between versions)
            "mix": [[name, weight] for name, weight in self.sampler.mix],
        }

    def _saved_mix(self, state: dict[str, Any]) -> Mix:
        """The mix the checkpointed league played: stored in it, or for a checkpoint written before that with
        ``league_opponents="auto"``, the game's mix of that time (:data:`LEAGUE_PRESETS_BEFORE_STORED_MIX`) whose
        anchors its table holds."""
        if state.get("mix") is not None:
            return tuple((str(name), float(weight)) for name, weight in state["mix"])
        mix = self.sampler.mix
        if self.trainer.config.league_opponents.strip() != "auto":
            return mix
        anchors = {pid for pid, player in self.table.players.items() if player.fixed}
        former = LEAGUE_PRESETS_BEFORE_STORED_MIX
        for spec in former.get(self._env_name, former["*"]):
            candidate = parse_mix(spec, self._env_name)
            if {name for name, _ in candidate if is_baseline(name)} == anchors:
                return candidate
        return mix

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`state_dict` output; snapshot weights are read from ``run_dir/league/``.

        Raises:
            CheckpointError: no league state (the checkpoint was written without ``league``) or a missing
                snapshot file.
        """

        if state is None:
            raise CheckpointError("the checkpoint holds no league state: it was written by a run without --league")
        run_dir = self.trainer.run_dir
        self.table = LeagueTable.from_dict(state["table"])
        self._mark = len(self.table.history)
        self.players, self.index = [], {}
        self.sampler = OpponentSampler(self._saved_mix(state))
        for name in self.sampler.baselines:
            if name not in self.table:
                anchors = sorted(pid for pid, player in self.table.players.items() if player.fixed)
                raise CheckpointError(f"the league of this checkpoint has no {name!r} baseline (its anchors: "
                                      f"{anchors}): it played another opponent mix than {self.sampler.mix}; resume "
                                      "it with the shoal version that trained it")
            self._register(self._baseline(name, self.rng))
        self.snapshots, self.leaving, self._meta, self._unsaved = [], [], {}, []
        # oldest first, as they were registered: opponents act in the order of their index (one RNG stream)
        for pool, entries in ((self.leaving, state.get("leaving", [])), (self.snapshots, state["snapshots"])):
            for entry in entries:
                pid = entry["id"]
                path = Path(run_dir) / SNAPSHOT_DIR / f"{pid}.pt"
                payload = load_checkpoint(path, map_location=self.trainer.device)
                self._register(PolicyPlayer(pid, frozen_copy(self.trainer.policy, payload["model"])))
                pool.append(pid)
                self._meta[pid] = {"update": int(entry["update"]), "global_step": int(entry["global_step"])}
        self._checkpoint_pools.clear()
        self._checkpoint_pools.extend(list(pool) for pool in state.get("checkpoint_pools", []))
        self._checkpoint_pools.append([*self.leaving, *self.snapshots])  # the checkpoint being loaded
        self.rng.bit_generator.state = state["rng"]
        self.learner = np.array(state["learner"], np.bool_)
        self.opponent = np.array([-1 if pid is None else self.index[pid] for pid in state["opponents"]], np.int64)
        self.opp_starts = np.array(state["opp_starts"], np.bool_)
        self.results = np.array(state["results"], np.float64)
        self.finished = np.array(state["finished"], np.bool_)
        self.seated = np.array(state["seated"], np.bool_)
        self._counts = np.array(state["counts"], np.int64)
        for pid, (rows, rows_state) in state["opp_states"].items():
            player = self.players[self.index[pid]]
            if isinstance(player, PolicyPlayer) and rows_state is not None:
                player.set_rows_state(rows, rows_state)


# ------------------------------------------------------------------------------------------------------------
# Matches: any two players, N games, win rates with confidence intervals
# ------------------------------------------------------------------------------------------------------------


def wilson_interval(successes: float, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% for ``z=1.96``); ``(0, 1)`` when ``trials == 0``."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1.0 + z * z / trials
    center = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def elo_difference(score: float, games: int) -> float:
    """The rating difference whose expected score is ``score`` (clipped to half a game from 0 and 1)."""
    eps = 0.5 / max(games, 1)
    s = min(max(score, eps), 1.0 - eps)
    return 400.0 * math.log10(s / (1.0 - s))


@dataclass
class MatchResult:
    """Outcome of :func:`play_match` from ``player``'s side.

    Attributes:
        player, opponent: ids. games: games played; wins/draws/losses: of ``player`` (a win: its return beats
            every opponent seat's; a draw: it ties the best of them).
        returns: ``player``'s episode return in each game.
        seats: ``{slot: [wins, draws, losses]}`` by the slot ``player`` sat in.
    """

    player: str
    opponent: str
    games: int = 0
    wins: int = 0
    draws: int = 0
    losses: int = 0
    returns: list[float] = field(default_factory=list)
    seats: dict[int, list[int]] = field(default_factory=dict)

    @property
    def score(self) -> float:
        """Mean score: (wins + draws / 2) / games."""
        return (self.wins + 0.5 * self.draws) / self.games if self.games else 0.0

    def summary(self, z: float = 1.96) -> dict[str, Any]:
        """JSON-ready rates with Wilson intervals (``z=1.96``: 95%) and the implied ELO difference."""
        n = self.games
        return {
            "player": self.player,
            "opponent": self.opponent,
            "games": n,
            "wins": self.wins,
            "draws": self.draws,
            "losses": self.losses,
            "win_rate": self.wins / n if n else 0.0,
            "win_rate_ci": list(wilson_interval(self.wins, n, z)),
            "draw_rate": self.draws / n if n else 0.0,
            "loss_rate": self.losses / n if n else 0.0,
            "loss_rate_ci": list(wilson_interval(self.losses, n, z)),
            "score": self.score,
            "score_ci": list(wilson_interval(self.wins + 0.5 * self.draws, n, z)),
            "elo_difference": elo_difference(self.score, n),
            "mean_return": float(np.mean(self.returns)) if self.returns else 0.0,
            "by_seat": {str(k): v for k, v in sorted(self.seats.items())},
        }


def play_match(player: Player, opponent: Player, env_fn: Callable[[], Any], games: int, *, seed: int = 0,
               num_envs: int = 8, max_agents: int | None = None, max_steps: int = 10_000_000) -> MatchResult:
    """Play ``games`` games of ``player`` against ``opponent`` and count ``player``'s wins, draws and losses.

    Game ``g`` seats ``player`` in the ``g % n``-th occupied slot (seats alternate evenly); ``opponent`` takes
    every other slot. Games are scored from the episode returns (see :class:`MatchResult`).

    Args:
        player, opponent: :class:`~shoal.train.selfplay.opponents.Player` s (bound here).
        env_fn: constructor of the game (a PettingZoo env with at least two agents).
        games: games to play. seed: seed of the envs. num_envs: games played side by side.
        max_agents: slots per env. max_steps: safety bound on vector steps.
    """

    if games < 1:
        raise APIUsageError(f"games must be >= 1, got {games}")
    num_envs = max(1, min(num_envs, games))
    emulate_kwargs = {"max_agents": max_agents} if max_agents is not None else None
    vec = vector.make(env_fn, num_envs, backend="serial", seed=seed, emulate_kwargs=emulate_kwargs)
    a, r = vec.agents_per_env, vec.num_agents
    result = MatchResult(player.player_id, opponent.player_id)
    try:
        if a < 2:
            raise APIUsageError(f"a match needs a game with at least two agents per env; this env has {a}")
        player.bind(r, a)
        opponent.bind(r, a)
        layout = vec.action_layout
        mine = np.zeros(r, np.bool_)
        starts = np.ones(r, np.bool_)
        returns = np.zeros(r, np.float64)
        finished = np.zeros(r, np.bool_)
        game_of = np.full(num_envs, -1, np.int64)
        seat_of = np.zeros(num_envs, np.int64)
        started = 0

        def seat(env: int) -> None:
            nonlocal started
            rows = slice(env * a, (env + 1) * a)
            types = vec.agent_types
            occupied = np.arange(a) if types is None else np.flatnonzero(types[rows] >= 0)
            if not len(occupied):
                occupied = np.arange(a)
            slot = int(occupied[started % len(occupied)])
            game_of[env], seat_of[env] = started, slot
            started += 1
            mine[rows] = False
            mine[env * a + slot] = True
            starts[rows] = True
            returns[rows] = 0.0
            finished[rows] = False

        def rate(env: int) -> None:
            rows = np.arange(env * a, (env + 1) * a)
            done = rows[finished[rows]]
            if game_of[env] >= games or not mine[done].any() or mine[done].all():
                return
            own = float(returns[done][mine[done]].mean())
            outcome = _outcome(own, returns[done][~mine[done]].tolist())
            result.games += 1
            result.wins += outcome == 0
            result.draws += outcome == 1
            result.losses += outcome == 2
            result.returns.append(own)
            result.seats.setdefault(int(seat_of[env]), [0, 0, 0])[outcome] += 1

        obs, _ = vec.reset(seed)
        for env in range(num_envs):
            seat(env)
        for _ in range(max_steps):
            masks, action_masks = vec.masks, vec.action_masks
            actions = np.zeros((r, *layout.flat_shape), layout.flat_dtype)
            for who, sel in ((player, masks & mine), (opponent, masks & ~mine)):
                idx = np.flatnonzero(sel)
                if len(idx):
                    actions[idx] = who.act(obs[idx], None if action_masks is None else action_masks[idx], idx,
                                           starts[idx])
                    starts[idx] = False
            obs, _rewards, terminals, truncations, infos = vec.step(actions)
            for k in np.flatnonzero(terminals | truncations):
                episode = infos[k].get("episode")
                if episode is not None:
                    returns[k] = float(episode["return"])
                    finished[k] = True
            for env in sorted({k // a for k in _reset_rows(infos)}):
                rate(env)
                seat(env)
            if result.games >= games or not (game_of < games).any():  # every game before `games` was rated
                break
    finally:
        vec.close()
    return result


def make_scripted(name: str, action_layout: Any, game: str, rng: np.random.Generator) -> ScriptedPlayer:
    """The scripted baseline ``name`` for a game named ``game``: ``"random"``, ``"heuristic"``
    (:mod:`~shoal.train.selfplay.heuristics`), ``"solver"`` (exact tic-tac-toe) or ``"alphabeta[@depth]"``
    (connect four; :mod:`~shoal.train.selfplay.search`)."""
    if name == "random":
        if action_layout.kind != "discrete":
            raise APIUsageError(f"the random baseline needs a Discrete action space, got {action_layout.flat_space!r}")
        return ScriptedPlayer("random", random_policy(int(action_layout.flat_space.n)), rng)
    if name == "heuristic":
        fn = heuristic_for(game)
        if fn is None:
            raise APIUsageError(f"{game!r} has no scripted heuristic (shoal has heuristics for {sorted(HEURISTICS)}); "
                                "use the 'random' baseline")
        return ScriptedPlayer("heuristic", fn, rng)
    if is_baseline(name):
        return ScriptedPlayer(name, search_player(name, game), rng)
    raise APIUsageError(f"unknown baseline {name!r}; valid: 'random', 'heuristic', 'solver' (tictactoe), "
                        "'alphabeta' or 'alphabeta@<depth>' (connect_four)")


def make_player(spec: str, env_fn: Callable[[], Any], *, device: Any = "cpu", deterministic: bool = True,
                seed: int = 0) -> Player:
    """A player from a command-line spec: a scripted baseline (``random``, ``heuristic``, ``solver``,
    ``alphabeta[@depth]``, see :func:`make_scripted`), a run directory or a checkpoint file (including a league
    snapshot ``RUN/league/snapshot-00120.pt``), checked against ``env_fn``'s env."""

    if is_baseline(spec):
        env = env_fn()
        try:
            game = env_name(env)
        finally:
            env.close()
        vec = vector.make(env_fn, 1, backend="serial", seed=0)
        try:
            layout = vec.action_layout
        finally:
            vec.close()
        return make_scripted(spec, layout, game, np.random.default_rng([seed, 11]))
    path = find_checkpoint(spec)
    policy, _config, _ = load_policy_from_checkpoint(path, device=device, env_fn=env_fn)
    return PolicyPlayer(_label(path), policy, deterministic=deterministic, device=device)


def _label(path: Path) -> str:
    return f"{path.parent.parent.name}/{path.stem}" if path.parent.name in ("checkpoints", SNAPSHOT_DIR) else path.stem


def evaluate_match(target: str | Path, opponent: str = "random", games: int = 100, *, seed: int | None = None,
                   deterministic: bool = True, device: Any = "cpu", num_envs: int = 8) -> dict[str, Any]:
    """Pit the policy of ``target`` (run directory or checkpoint) against ``opponent`` (``random``,
    ``heuristic``, a run directory or a checkpoint) for ``games`` games; the :meth:`MatchResult.summary` plus
    ``checkpoint`` and ``env``."""

    checkpoint = find_checkpoint(target)
    policy, config, env_fn = load_policy_from_checkpoint(checkpoint, device=device)
    seed = config.seed + 10_007 if seed is None else seed
    player = PolicyPlayer(_label(checkpoint), policy, deterministic=deterministic, device=device)
    other = make_player(str(opponent), env_fn, device=device, deterministic=deterministic, seed=seed)
    result = play_match(player, other, env_fn, games, seed=seed, num_envs=num_envs, max_agents=config.max_agents)
    return {**result.summary(), "checkpoint": str(checkpoint), "env": config.env, "deterministic": deterministic}


# ------------------------------------------------------------------------------------------------------------
# The league table of a run: load, print, plot
# ------------------------------------------------------------------------------------------------------------


def load_league(run_dir: str | Path) -> LeagueTable:
    """The league table of a run directory (``RUN/league.json``)."""
    path = Path(run_dir) / LEAGUE_FILE
    if not path.is_file():
        raise CheckpointError(f"no league table at {path}: train with --league and --run-dir {run_dir} first")
    return LeagueTable.load(path)


def format_league(table: LeagueTable) -> str:
    """The table (best rating first; ``*`` marks fixed anchors, ``-`` snapshots that left the pool) and every
    player's W-D-L against each opponent."""
    lines = [table.format(), "", "records (W-D-L against each opponent):"]
    for row in table.rows():
        record = table.players[row["id"]].record
        if record:
            parts = ", ".join(f"{opp} {wins}-{draws}-{losses}" for opp, (wins, draws, losses) in
                              sorted(record.items(), key=lambda item: -sum(item[1])))
            lines.append(f"  {row['id']}: {parts}")
    return "\n".join(lines)


def plot_league(table: LeagueTable, out: str | Path) -> Path:
    """Write a PNG of every player's rating over time (left) and each snapshot's rating at entry and now (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    history = table.history
    use_step = any("step" in entry for entry in history)
    xs = [entry.get("step", 0) if use_step else entry["games"] for entry in history]
    snapshots = [pid for pid in table.players if pid.startswith("snapshot-")]
    cmap = plt.get_cmap("viridis")
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [2, 1]})
    for pid, player in table.players.items():
        points = [(x, entry["ratings"][pid]) for x, entry in zip(xs, history, strict=True) if pid in entry["ratings"]]
        if not points:
            continue
        x, y = zip(*points, strict=True)
        if pid == LEARNER:
            left.plot(x, y, color="black", linewidth=2.2, label=LEARNER, zorder=5)
        elif player.fixed:
            left.plot(x, y, linestyle="--", linewidth=1.5, label=f"{pid} (anchor)")
        else:
            i = snapshots.index(pid)
            label = pid if i in (0, len(snapshots) - 1) else None
            left.plot(x, y, color=cmap(i / max(1, len(snapshots) - 1)), linewidth=0.9, alpha=0.8, label=label)
    left.set_xlabel("agent steps" if use_step else "games rated")
    left.set_ylabel("ELO rating")
    left.set_title(f"ratings over time ({table.total_games:,} games, K={table.k:g})")
    left.legend(loc="best", fontsize=8)
    left.grid(alpha=0.3)
    if snapshots:
        updates = [int(pid.split("-")[1]) for pid in snapshots]
        entry: dict[str, float] = {}
        for item in history:
            for pid, rating in item["ratings"].items():
                entry.setdefault(pid, rating)
        right.plot(updates, [entry.get(pid, math.nan) for pid in snapshots], "s-", color="black", markersize=3,
                   label="at entry (parent's rating)")
        right.plot(updates, [table.players[pid].rating for pid in snapshots], "o-", color="tab:blue",
                   markersize=4, label="now")
        right.legend(loc="best", fontsize=8)
        for pid, player in table.players.items():
            if player.fixed:
                right.axhline(player.rating, linestyle="--", linewidth=1, color="gray")
                right.annotate(pid, (updates[0], player.rating), fontsize=8, va="bottom")
        right.set_xlabel("snapshot (update)")
        right.set_ylabel("ELO rating")
        right.set_title("snapshots")
        right.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
