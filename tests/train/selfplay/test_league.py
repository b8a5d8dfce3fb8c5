"""Self-play leagues: seat routing, opponents per episode, learner-only buffers, ratings, resume, matches, CLI."""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gymnasium import spaces
from pettingzoo import AECEnv
from pettingzoo.utils import AgentSelector

from shoal.cli import main
from shoal.errors import APIUsageError, CheckpointError
from shoal.train import TrainConfig, Trainer, train
from shoal.train.api import trainer_class
from shoal.train.mappo.trainer import MAPPOTrainer
from shoal.train.runs.checkpoint import load_checkpoint, save_checkpoint
from shoal.train.selfplay.elo import LeagueTable
from shoal.train.selfplay.heuristics import connect_four_heuristic, random_policy, tictactoe_heuristic
from shoal.train.selfplay.league import (
    LEARNER,
    format_league,
    load_league,
    make_scripted,
    play_match,
    wilson_interval,
)
from shoal.train.selfplay.opponents import OpponentSampler, PolicyPlayer, ScriptedPlayer, parse_mix

TICTACTOE = "pettingzoo.classic.tictactoe_v3"


class TurnGame(AECEnv):
    """A tiny turn-based game whose observations say who is looking and in which episode.

    Observation of ``player_i``: float32 ``[i, episode, turn]``. Each episode lasts 2-7 turns (the env's RNG);
    every action adds to the mover's score; the highest score wins (+1), the others lose (-1); a shared best is
    a draw (0).
    """

    metadata = {"name": "turn_game_v0", "is_parallelizable": False, "render_modes": []}

    def __init__(self, num_players: int = 2) -> None:
        super().__init__()
        self.possible_agents = [f"player_{i}" for i in range(num_players)]
        self._obs_space = spaces.Box(-1.0, 1e6, (3,), np.float32)
        self._act_space = spaces.Discrete(3)
        self.episode = -1
        self._rng = np.random.default_rng(0)

    def observation_space(self, agent: str) -> spaces.Space:
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Space:
        return self._act_space

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.episode += 1
        self.agents = list(self.possible_agents)
        self.length = int(self._rng.integers(2, 8))
        self.turn = 0
        self.score = dict.fromkeys(self.agents, 0)
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self._cumulative_rewards = dict.fromkeys(self.agents, 0.0)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        self.infos = {a: {} for a in self.agents}
        self._selector = AgentSelector(self.agents)
        self.agent_selection = self._selector.reset()

    def observe(self, agent: str) -> np.ndarray:
        return np.array([self.possible_agents.index(agent), self.episode, self.turn], np.float32)

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        self._cumulative_rewards[agent] = 0.0
        self.score[agent] += int(action)
        self.turn += 1
        self.rewards = dict.fromkeys(self.agents, 0.0)
        if self.turn >= self.length:
            best = max(self.score.values())
            winners = [a for a in self.agents if self.score[a] == best]
            for a in self.agents:
                self.rewards[a] = 0.0 if len(winners) > 1 and a in winners else 1.0 if a in winners else -1.0
            self.terminations = dict.fromkeys(self.agents, True)
        self.agent_selection = self._selector.next()
        self._accumulate_rewards()


def small(**overrides: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        env="turn_game",
        total_steps=400,
        num_envs=4,
        horizon=8,
        minibatch_size=32,
        update_epochs=1,
        hidden_size=16,
        lstm_size=8,
        seed=3,
        tensorboard=False,
        log_interval=0.0,
        league=True,
        league_snapshot_interval=1,
        league_opponents="latest:0.4,uniform:0.3,pfsp:0.2,random:0.1",
    )
    base.update(overrides)
    return TrainConfig(**base)


# ---- routing ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("players, recurrent", [(2, True), (3, False)], ids=["2p-lstm", "3p"])
def test_opponents_stay_for_the_whole_episode_and_only_learner_rows_reach_the_buffer(
    monkeypatch: pytest.MonkeyPatch, players: int, recurrent: bool
) -> None:
    # no rating games among snapshots: every opponent move recorded here is one of the training games
    trainer = Trainer(small(recurrent=recurrent, league_rating_games=0), env_fn=functools.partial(TurnGame, players))
    league = trainer.league
    a = players
    buffered: list[tuple[int, int, int]] = []  # (env, episode, slot) of every transition in the buffer
    opponent_moves: list[tuple[int, int, int, str, bool]] = []  # (env, episode, slot, player, starts)
    calls: list[list[str]] = []

    original_act = trainer.buffer.act

    def buffer_act(rows: np.ndarray, obs: np.ndarray, *args: Any, **kwargs: Any) -> None:
        assert league.learner[rows].all(), "an opponent row reached the buffer"
        assert (obs[:, 0] == rows % a).all()  # the row's own observation
        buffered.extend(zip((rows // a).tolist(), obs[:, 1].astype(int).tolist(), (rows % a).tolist(), strict=True))
        original_act(rows, obs, *args, **kwargs)

    trainer.buffer.act = buffer_act  # type: ignore[method-assign]

    def recording(cls: type) -> Any:
        original = cls.act

        def act(self: Any, obs: np.ndarray, action_masks: Any, rows: np.ndarray, starts: np.ndarray) -> Any:
            calls[-1].append(self.player_id)
            for row, o, s in zip(rows.tolist(), obs, starts.tolist(), strict=True):
                assert o[0] == row % a and not league.learner[row]
                opponent_moves.append((row // a, int(o[1]), row % a, self.player_id, bool(s)))
            return original(self, obs, action_masks, rows, starts)

        return act

    league_act = league.act

    def act(carry: Any, actions: np.ndarray) -> None:
        calls.append([])
        league_act(carry, actions)

    league.act = act  # type: ignore[method-assign]
    stats_episodes = [0]  # episodes the per-agent statistics counted
    assert trainer.agent_stats is not None
    stats_record = trainer.agent_stats.record

    def record(rows: np.ndarray, env_ids: np.ndarray, infos: Any, ended: np.ndarray, *args: Any) -> None:
        stats_episodes[0] += sum("episode" in infos[k] for k in np.flatnonzero(ended))
        stats_record(rows, env_ids, infos, ended, *args)

    trainer.agent_stats.record = record  # type: ignore[method-assign]
    monkeypatch.setattr(PolicyPlayer, "act", recording(PolicyPlayer))
    monkeypatch.setattr(ScriptedPlayer, "act", recording(ScriptedPlayer))
    result = trainer.train()

    assert result.updates >= 4 and len(league.snapshots) == result.updates + 1
    # per-agent statistics: the learner's episodes only; result.episodes counts games (whole env episodes)
    assert stats_episodes[0] == trainer.agent_stats.agent_episodes >= result.episodes > 0
    # one batched forward per distinct opponent per step
    assert all(len(c) == len(set(c)) for c in calls)
    assert max(len(set(c)) for c in calls) >= 2
    # the learner holds exactly one seat per episode, and both/all seats over time
    learner_seat: dict[tuple[int, int], set[int]] = defaultdict(set)
    for env, episode, slot in buffered:
        learner_seat[env, episode].add(slot)
    assert all(len(s) == 1 for s in learner_seat.values())
    assert {next(iter(s)) for s in learner_seat.values()} == set(range(a))
    # an opponent seat keeps one opponent for its whole episode; its state resets exactly at its first move
    seen: dict[tuple[int, int, int], str] = {}
    for env, episode, slot, player, starts in opponent_moves:
        key = (env, episode, slot)
        assert starts == (key not in seen), f"starts={starts} at move of {key}"
        assert seen.setdefault(key, player) == player, f"opponent switched mid-episode at {key}"
        assert slot not in learner_seat.get((env, episode), set())
    assert len({p for p in seen.values()}) >= 3  # several snapshots and the random baseline were drawn
    # every finished game was rated; the learner's games show up against several opponents
    table = league.table
    assert table.players[LEARNER].games == table.total_games > 20
    assert len(table.players[LEARNER].record) >= 3


def test_default_league_trains_on_both_seats_of_live_games_and_one_seat_against_snapshots() -> None:
    """The league once seated a frozen copy in every other seat, so it learned one side of each game against a
    stale target and lost to perfect play far more often than plain self-play. By default (``self:0.8``) the live
    learner takes both seats of most games, and learns from both, as in plain self-play."""
    cfg = small(recurrent=False, league_opponents="auto", league_rating_games=0, total_steps=600)
    assert cfg.league_opponents == "auto"  # the default
    trainer = Trainer(cfg, env_fn=functools.partial(TurnGame, 2))
    league = trainer.league
    assert dict(league.sampler.mix) == {"self": pytest.approx(0.8), "uniform": pytest.approx(0.2)}
    seats: dict[tuple[int, int], set[int]] = defaultdict(set)  # (env, episode) -> learner slots in the buffer
    original_act = trainer.buffer.act

    def buffer_act(rows: np.ndarray, obs: np.ndarray, *args: Any, **kwargs: Any) -> None:
        assert league.learner[rows].all() and (league.opponent[rows] < 0).all()
        for row, episode in zip(rows.tolist(), obs[:, 1].astype(int).tolist(), strict=True):
            seats[row // 2, episode].add(row % 2)
        original_act(rows, obs, *args, **kwargs)

    trainer.buffer.act = buffer_act  # type: ignore[method-assign]
    trainer.train()
    both = sum(len(s) == 2 for s in seats.values())
    assert len(seats) > 100
    assert 0.7 < both / len(seats) < 0.9  # ~80% live games: both seats train
    table = trainer.league.table
    # live games (the learner on both sides) are not rated; games against snapshots are
    assert 0 < table.players[LEARNER].games < len(seats) - both + 10


def test_auto_mix_is_the_games_preset() -> None:
    assert dict(parse_mix("auto", "tictactoe")) == pytest.approx({"self": 0.5, "uniform": 0.1, "solver": 0.25,
                                                               "heuristic": 0.15})
    assert dict(parse_mix("auto", "connect_four")) == pytest.approx({"self": 0.2, "uniform": 0.1, "random": 0.1,
                                                                     "heuristic": 0.45, "alphabeta@2": 0.15})
    assert dict(parse_mix("auto", "rps")) == pytest.approx({"self": 0.8, "uniform": 0.2})
    assert parse_mix("self,alphabeta@3:1") == (("self", 0.5), ("alphabeta@3", 0.5))
    for bad, match in (("alphabeta@x", "positive integer"), ("solver@2", "takes none"), ("minimax", "unknown")):
        with pytest.raises(APIUsageError, match=match):
            parse_mix(bad)


def test_league_needs_a_multi_agent_env() -> None:
    with pytest.raises(APIUsageError, match="at least two agent slots"):
        Trainer(small(env="CartPole-v1"))
    with pytest.raises(APIUsageError, match="league_opponents"):
        small(league_opponents="latest:0.5,champions").validate()
    with pytest.raises(APIUsageError, match="no scripted heuristic"):
        Trainer(small(league_opponents="latest,heuristic"), env_fn=TurnGame)


# ---- opponent mix ----------------------------------------------------------------------------------------------


def test_mix_parsing_and_pfsp_prefers_hard_opponents() -> None:
    assert parse_mix("latest:0.8,uniform:0.2") == (("latest", 0.8), ("uniform", 0.2))
    assert parse_mix("latest:3, random") == (("latest", 0.75), ("random", 0.25))
    for bad in ("", "latest:0", "latest:x", "latest,latest", "best"):
        with pytest.raises(APIUsageError):
            parse_mix(bad)
    sampler = OpponentSampler(parse_mix("pfsp"))
    expected = {"weak": 0.9, "even": 0.5, "strong": 0.1}
    rng = np.random.default_rng(0)
    draws = [sampler.sample(rng, list(expected), expected.__getitem__) for _ in range(4000)]
    counts = {k: draws.count(k) / len(draws) for k in expected}
    # weights (1 - p)^2: 0.01, 0.25, 0.81 -> 0.009, 0.234, 0.757
    assert counts["strong"] == pytest.approx(0.757, abs=0.03) and counts["weak"] < 0.02
    latest = OpponentSampler(parse_mix("latest"))
    assert latest.sample(rng, ["a", "b", "c"], expected.__getitem__) == "c"
    mixed = OpponentSampler(parse_mix("latest:0.8,uniform:0.2"))
    draws = [mixed.sample(rng, ["a", "b", "c", "d"], expected.__getitem__) for _ in range(4000)]
    assert draws.count("d") / 4000 == pytest.approx(0.8 + 0.2 / 4, abs=0.03)


# ---- scripted players and matches ------------------------------------------------------------------------------


def test_heuristics_win_and_block() -> None:
    rng = np.random.default_rng(0)
    board = np.zeros((6, 7, 2), np.int8)
    board[5, 0:3, 0] = 1  # three of mine on the bottom row: win in column 3
    board[3:6, 6, 1] = 1  # three of theirs in column 6: would be blocked, but winning comes first
    assert connect_four_heuristic(board.reshape(1, -1), None, rng)[0] == 3
    board[5, 0:3, 0] = 0
    assert connect_four_heuristic(board.reshape(1, -1), None, rng)[0] == 6
    diagonal = np.zeros((6, 7, 2), np.int8)  # mine at (5,0) (4,1) (3,2); (2,3) lands once column 3 has 3 stones
    diagonal[[5, 4, 3], [0, 1, 2], 0] = 1
    diagonal[[5, 4, 3, 5, 5, 4], [3, 3, 3, 1, 2, 2], 1] = 1
    assert connect_four_heuristic(diagonal.reshape(1, -1), None, rng)[0] == 3
    ttt = np.zeros((3, 3, 2), np.int8)
    ttt[1, 0, 1] = ttt[1, 1, 1] = 1  # theirs: block cell 5
    assert tictactoe_heuristic(ttt.reshape(1, -1), None, rng)[0] == 5
    masks = np.zeros((4, 9), np.bool_)
    masks[:, [2, 7]] = True  # only legal moves are ever played
    assert set(random_policy(9)(np.zeros((4, 18), np.int8), masks, rng).tolist()) <= {2, 7}


def test_play_match_balances_seats_and_reports_intervals() -> None:
    from shoal.train.runs.resolve import resolve_env

    env_fn = resolve_env("pettingzoo.classic.connect_four_v3")
    rng = np.random.default_rng(1)
    from shoal import vector

    vec = vector.make(env_fn, 1, backend="serial")
    layout = vec.action_layout
    vec.close()
    heuristic = make_scripted("heuristic", layout, "connect_four", rng)
    random_player = make_scripted("random", layout, "connect_four", rng)
    result = play_match(heuristic, random_player, env_fn, 60, seed=2, num_envs=8)
    summary = result.summary()
    assert result.games == 60 and result.wins + result.draws + result.losses == 60
    assert {k: sum(v) for k, v in summary["by_seat"].items()} == {"0": 30, "1": 30}
    assert summary["win_rate"] >= 0.8
    lo, hi = summary["win_rate_ci"]
    assert lo <= summary["win_rate"] <= hi
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)


# ---- persistence -----------------------------------------------------------------------------------------------


class Crash(Exception):
    pass


def crash_after(update: int) -> Any:
    def callback(record: Any) -> None:
        if record.scalars["charts/update"] == update:
            raise Crash

    return callback


def test_league_table_survives_save_and_resume_exactly(tmp_path: Path) -> None:
    def cfg(run_dir: Path, **kw: Any) -> TrainConfig:
        return small(env=TICTACTOE, run_dir=str(run_dir), total_steps=8 * 8 * 5, checkpoint_interval=1,
                     league_opponents="latest:0.5,pfsp:0.3,random:0.1,heuristic:0.1", league_snapshot_interval=2,
                     **kw)

    whole = Trainer(cfg(tmp_path / "whole"))
    whole_result = whole.train()
    with pytest.raises(Crash):
        train(cfg(tmp_path / "split"), callbacks=[crash_after(3)])
    saved = load_league(tmp_path / "split")
    assert saved.total_games > 0 and "heuristic" in saved.players and saved.players["heuristic"].fixed
    resumed = Trainer(cfg(tmp_path / "split", resume=True))
    resumed.restore(resumed._resume_from)
    assert resumed.league.table == saved  # restored exactly as saved (ratings, records, history)
    assert resumed.league.snapshots == ["snapshot-00000", "snapshot-00002"]
    resumed.vecenv.close()
    result = train(cfg(tmp_path / "split", resume=True))
    assert result.exact_resume and result.updates == whole_result.updates
    final = load_league(tmp_path / "split")
    assert final == load_league(tmp_path / "whole") == whole.league.table  # the same games, the same ratings
    for name, value in whole_result.policy.state_dict().items():
        assert torch.equal(value, result.policy.state_dict()[name]), name
    snapshots = sorted(p.name for p in (tmp_path / "split" / "league").iterdir())
    assert snapshots == ["snapshot-00000.pt", "snapshot-00002.pt", "snapshot-00004.pt"]


@pytest.mark.parametrize("stored", [True, False], ids=["mix-in-checkpoint", "older-checkpoint"])
def test_an_auto_league_resumes_exactly_after_the_games_preset_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stored: bool) -> None:
    # "auto" is recorded in the run's config; the preset behind it may change in a later version. The league
    # stores the mix it played, and a checkpoint from before that resumes with the former preset whose anchors
    # its table holds (else: "no 'random' baseline" and no way to resume)
    from shoal.train import config as config_module
    from shoal.train.selfplay.league import League

    # a stored mix must win even over a new preset with the same anchors; an older checkpoint can only be matched
    # by its anchors
    before = "self:0.5,latest:0.3,heuristic:0.2"
    after = "self:0.4,latest:0.4,heuristic:0.2" if stored else "self:0.5,latest:0.3,random:0.2"
    monkeypatch.setitem(config_module.LEAGUE_PRESETS, "tictactoe", before)

    def cfg(run_dir: Path, **kw: Any) -> TrainConfig:
        return small(env=TICTACTOE, run_dir=str(run_dir), total_steps=8 * 8 * 5, checkpoint_interval=1,
                     league_opponents="auto", league_snapshot_interval=2, **kw)

    whole = train(cfg(tmp_path / "whole"))
    if not stored:  # a checkpoint written before the league stored its mix
        real = League.state_dict
        monkeypatch.setattr(League, "state_dict", lambda self: {k: v for k, v in real(self).items() if k != "mix"})
    with pytest.raises(Crash):
        train(cfg(tmp_path / "split"), callbacks=[crash_after(3)])
    monkeypatch.setitem(config_module.LEAGUE_PRESETS, "tictactoe", after)
    if not stored:
        monkeypatch.setitem(config_module.LEAGUE_PRESETS_BEFORE_STORED_MIX, "tictactoe", (before,))
    result = train(cfg(tmp_path / "split", resume=True))
    assert result.exact_resume and result.updates == whole.updates
    assert load_league(tmp_path / "split") == load_league(tmp_path / "whole")  # the same opponents, games, ratings
    assert "random" not in load_league(tmp_path / "split").players  # the checkpoint's anchors, not the new preset's
    for name, value in whole.policy.state_dict().items():
        assert torch.equal(value, result.policy.state_dict()[name]), name


def test_snapshots_stay_frozen_and_the_final_checkpoint_is_the_learners(tmp_path: Path) -> None:
    run = tmp_path / "run"
    trainer = Trainer(small(env=TICTACTOE, run_dir=str(run), total_steps=8 * 8 * 6, league_snapshot_interval=2,
                            league_opponents="self:0.5,latest:0.5", league_rating_games=4))
    initial = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    result = trainer.train()
    league = trainer.league

    def weights(pid: str) -> dict[str, torch.Tensor]:
        return league.players[league.index[pid]].policy.state_dict()  # type: ignore[attr-defined]

    def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
        return all(torch.equal(a[k], b[k]) for k in a)

    assert same(weights("snapshot-00000"), initial)  # taken before training, never trained since
    final = result.policy.state_dict()
    assert not same(final, initial)
    assert len(league.snapshots) >= 3
    for pid in league.snapshots:
        saved = torch.load(run / "league" / f"{pid}.pt", weights_only=False)["model"]
        assert same(weights(pid), saved), pid  # the file holds the weights the league plays with
        if pid != league.snapshots[-1]:
            assert not same(weights(pid), final), pid  # later updates did not reach the snapshot
    # the run's newest checkpoint holds the learner's weights, not a snapshot's
    newest = sorted((run / "checkpoints").iterdir())[-1]
    assert same(torch.load(newest, weights_only=False)["model"], final)


def _named_by_checkpoints(run_dir: Path) -> set[str]:
    """The snapshots (pool and leaving) the checkpoints kept in ``run_dir`` name."""
    names = set()
    for path in (run_dir / "checkpoints").iterdir():
        state = load_checkpoint(path, map_location="cpu")["league"]
        names |= {entry["id"] for entry in (*state["snapshots"], *state["leaving"])}
    return names


def test_the_pool_keeps_the_newest_snapshots_and_resumes_exactly(tmp_path: Path) -> None:
    def cfg(run_dir: Path, **kw: Any) -> TrainConfig:
        return small(env=TICTACTOE, run_dir=str(run_dir), total_steps=8 * 8 * 8, checkpoint_interval=1,
                     league_opponents="latest:0.3,uniform:0.6,random:0.1", league_pool_size=2, **kw)

    whole = Trainer(cfg(tmp_path / "whole"))
    whole_result = whole.train()
    league = whole.league
    taken = sorted(pid for pid in league.table.players if pid.startswith("snapshot-"))
    assert len(taken) == whole_result.updates + 1  # one per update and one before training
    assert league.snapshots == taken[-2:]  # the two newest, oldest first
    kept = {*league.snapshots, *league.leaving}
    for pid in taken:
        player = league.table.players[pid]
        assert player.retired == (pid not in league.snapshots), pid
        assert (player.path is None) == player.retired, pid
        assert (pid in league.index) == (pid in kept), pid  # weights freed once no game seats them
    assert sum(isinstance(p, PolicyPlayer) for p in league.players) == len(kept)
    ratings = set(league.table.history[-1]["ratings"])  # written by the newest snapshot's rating games
    assert {"learner", "random", *league.snapshots} <= ratings and not ratings & set(taken[:-3])
    # the files on disk: exactly those some kept checkpoint (keep_checkpoints=3) names, so each of them resumes
    named = _named_by_checkpoints(tmp_path / "whole")
    assert kept <= named and len(named) < len(taken)
    assert {p.stem for p in (tmp_path / "whole" / "league").iterdir()} == named
    assert f"{taken[0]} -" in format_league(league.table) and f"{taken[-1]} -" not in format_league(league.table)
    # a new snapshot is rated against the previous one, which the pool of 2 then drops
    assert league.table.players[taken[-1]].record.get(taken[-2]) is not None

    with pytest.raises(Crash):
        train(cfg(tmp_path / "split"), callbacks=[crash_after(4)])
    result = train(cfg(tmp_path / "split", resume=True))
    assert result.exact_resume and result.updates == whole_result.updates
    assert load_league(tmp_path / "split") == load_league(tmp_path / "whole") == league.table
    for name, value in whole_result.policy.state_dict().items():
        assert torch.equal(value, result.policy.state_dict()[name]), name
    assert {p.name for p in (tmp_path / "split" / "league").iterdir()} == \
        {p.name for p in (tmp_path / "whole" / "league").iterdir()}


def test_every_kept_checkpoint_of_a_bounded_pool_resumes(tmp_path: Path) -> None:
    config = small(env=TICTACTOE, run_dir=str(tmp_path), total_steps=8 * 8 * 6, checkpoint_interval=1,
                   league_opponents="latest:0.5,uniform:0.5", league_pool_size=1)
    train(config)
    checkpoints = sorted((tmp_path / "checkpoints").iterdir())
    assert len(checkpoints) == 3
    for path in checkpoints:  # as find_checkpoint falls back to an older one when the newest is unreadable
        trainer = Trainer(config.replace(resume=True))
        trainer.restore(path)
        state = load_checkpoint(path, map_location="cpu")["league"]
        assert trainer.league.snapshots == [entry["id"] for entry in state["snapshots"]]
        trainer.vecenv.close()


def test_a_snapshot_that_leaves_the_pool_mid_game_finishes_it_and_survives_a_resume(tmp_path: Path) -> None:
    config = small(env=TICTACTOE, run_dir=str(tmp_path), league_pool_size=2, league_rating_games=0,
                   league_opponents="uniform:0.9,random:0.1", keep_checkpoints=1)
    trainer = Trainer(config)
    league = trainer.league
    oldest = league.snapshots[0]
    league.opponent[1] = league.index[oldest]  # env 0's game against the oldest snapshot is still going on
    for update in (1, 2):
        trainer.update = update
        league.snapshot()
    assert league.snapshots == ["snapshot-00001", "snapshot-00002"] and league.leaving == [oldest]
    assert isinstance(league.players[league.index[oldest]], PolicyPlayer)  # still seated: its weights stay
    trainer.save()
    assert (tmp_path / "league" / f"{oldest}.pt").exists()  # a resume needs it for the game in progress

    resumed = Trainer(config.replace(resume=True))
    resumed.league.load_state_dict(load_checkpoint(resumed._resume_from, map_location="cpu")["league"])
    assert resumed.league.snapshots == league.snapshots and resumed.league.leaving == [oldest]
    assert resumed.league.opponent[1] == resumed.league.index[oldest]
    resumed.league.opponent[1] = -1  # its game ended and the seat went to someone else
    resumed.league.after_update()
    assert resumed.league.leaving == [] and oldest not in resumed.league.index
    assert sum(isinstance(p, PolicyPlayer) for p in resumed.league.players) == 2
    resumed.update = 3
    resumed.save()  # the only kept checkpoint no longer names it
    assert not (tmp_path / "league" / f"{oldest}.pt").exists()
    assert resumed.league.table.players[oldest].retired
    for t in (trainer, resumed):
        t.vecenv.close()


def test_league_pool_size_is_checked_and_runs_saved_before_it_resume_unbounded(tmp_path: Path) -> None:
    with pytest.raises(APIUsageError, match="league_pool_size"):
        small(league_pool_size=-1).validate()
    with pytest.raises(APIUsageError, match="league_pool_size"):
        small(league_pool_size=True).validate()
    assert TrainConfig().league_pool_size is None and TrainConfig().resolved().league_pool_size == 500
    # a league run saved before the option (its config without the field): resumed from Python with the option
    # left unset, it keeps the unlimited pool it trained with; any run may be resumed with another size
    config = small(env=TICTACTOE, run_dir=str(tmp_path), total_steps=8 * 8 * 3)
    train(config)
    newest = sorted((tmp_path / "checkpoints").iterdir())[-1]
    payload = load_checkpoint(newest, map_location="cpu")
    del payload["config"]["league_pool_size"]
    save_checkpoint(newest, payload)
    resumed = Trainer(config.replace(resume=True, total_steps=8 * 8 * 4))
    assert resumed.config.league_pool_size == 0
    resumed.vecenv.close()
    resized = Trainer(config.replace(resume=True, total_steps=8 * 8 * 4, league_pool_size=2))
    resized.restore(resized._resume_from)
    resized.update += 1
    resized.league.snapshot()
    assert len(resized.league.snapshots) == 2
    resized.vecenv.close()


def test_a_resumed_league_keeps_its_checkpoints_pool_size_through_mappo_and_the_cli(tmp_path: Path) -> None:
    # value normalization runs the league on the MAPPO trainer, which resolves the config before the base trainer
    config = small(env=TICTACTOE, run_dir=str(tmp_path), total_steps=8 * 8 * 2, value_norm="running",
                   league_pool_size=2)
    train(config)
    cls = trainer_class(config)
    assert cls is MAPPOTrainer
    resumed = cls(config.replace(resume=True, league_pool_size=None, total_steps=8 * 8 * 3))
    assert resumed.config.league_pool_size == 2
    resumed.vecenv.close()
    train(config.replace(resume=True, league_pool_size=3, total_steps=8 * 8 * 3))  # an API resume changes it
    assert TrainConfig.load(tmp_path / "config.json").league_pool_size == 2  # the run's original config file
    # the command line resumes with the checkpoint's size (3), not the config file's, unless the flag is given
    assert main(["train", TICTACTOE, "--run-dir", str(tmp_path), "--resume", "--total-steps", str(8 * 8 * 4),
                 "--json"]) == 0
    newest = sorted((tmp_path / "checkpoints").iterdir())[-1]
    assert load_checkpoint(newest, map_location="cpu")["config"]["league_pool_size"] == 3


def test_resuming_a_run_without_league_is_refused(tmp_path: Path) -> None:
    train(small(env=TICTACTOE, run_dir=str(tmp_path), league=False, total_steps=64))
    with pytest.raises(CheckpointError, match="league=False"):
        train(small(env=TICTACTOE, run_dir=str(tmp_path), total_steps=128, resume=True))


# ---- the Nash equilibrium of rock-paper-scissors -----------------------------------------------------------------


def test_rps_self_play_moves_toward_uniform() -> None:
    """Start from a policy that plays rock 86% of the time; self-play against its latest snapshot with an entropy
    bonus spirals into the uniform Nash equilibrium (entropy-regularized replicator dynamics; without the
    bonus they orbit it)."""
    from shoal import vector
    from shoal.policies import Policy
    from shoal.train.runs.resolve import resolve_env

    env_fn = resolve_env("pettingzoo.classic.rps_v2")
    probe = vector.make(env_fn, 1, backend="serial")
    torch.manual_seed(0)
    policy = Policy.from_env(probe, hidden_size=16)
    probe.close()
    with torch.no_grad():
        policy.head.logits.bias.copy_(torch.tensor([3.0, 0.8, 0.0]))  # rock 0.86, paper 0.10, scissors 0.04

    def distribution(p: torch.nn.Module) -> np.ndarray:
        obs = torch.arange(4).reshape(4, 1)  # every observation: the opponent's last move, or none (3)
        with torch.no_grad():
            return torch.softmax(p(obs).logits, -1).mean(0).numpy()

    start = distribution(policy)
    config = TrainConfig(env="pettingzoo.classic.rps_v2", total_steps=30_000, num_envs=8, horizon=16,
                         minibatch_size=256, update_epochs=2, learning_rate=3e-3, ent_coef=0.1, norm_adv=False,
                         seed=0, tensorboard=False, league=True, league_opponents="latest",
                         league_snapshot_interval=1, league_rating_games=0)
    result = train(config, policy=policy)
    end = distribution(result.policy)
    uniform = np.full(3, 1 / 3)
    start_tv, end_tv = 0.5 * np.abs(start - uniform).sum(), 0.5 * np.abs(end - uniform).sum()
    assert start_tv > 0.5
    assert end_tv < 0.5 * start_tv, (start, end)
    assert end.min() > 0.15, end  # every action is played again


# ---- command line ----------------------------------------------------------------------------------------------


def test_cli_league_table_plot_and_eval_against_opponents(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    train(small(env=TICTACTOE, run_dir=str(run), total_steps=8 * 8 * 3, league_opponents="latest,random"))

    def last_json() -> dict[str, Any]:
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    assert main(["league", str(run), "--plot"]) == 0
    out = last_json()
    assert out["ok"] and out["command"] == "league" and Path(out["png"]).stat().st_size > 10_000
    table = LeagueTable.load(run / "league.json")
    assert {p["id"] for p in out["players"]} == set(table.players)
    learner = next(p for p in out["players"] if p["id"] == LEARNER)
    assert sum(map(sum, learner["record"].values())) == learner["games"]
    # the rest of the games are among frozen players: each snapshot against the previous one and the anchor
    frozen = table.total_games - learner["games"]
    snapshots = [pid for pid in table.players if pid.startswith("snapshot-")]
    assert frozen == sum(sum(record) for pid in snapshots for opp, record in table.players[pid].record.items()
                         if opp != LEARNER and not opp > pid)  # counted once: by the newer snapshot
    assert table.players["snapshot-00000"].record["random"] and table.players["snapshot-00001"].record["snapshot-00000"]
    for opponent in ("random", "heuristic", str(run / "league" / "snapshot-00000.pt"), str(run)):
        assert main(["eval", str(run), "--opponent", opponent, "--episodes", "12", "--json"]) == 0
        out = last_json()
        assert out["ok"] and out["games"] == 12 and out["wins"] + out["draws"] + out["losses"] == 12
        lo, hi = out["win_rate_ci"]
        assert 0 <= lo <= out["win_rate"] <= hi <= 1
    assert main(["league", str(tmp_path), "--json"]) == 2
    assert "no league table" in last_json()["error"]


@pytest.mark.parametrize(
    "env, kwargs, mix",
    [
        ("pettingzoo.classic.connect_four_v3", {}, "latest:0.6,random:0.2,heuristic:0.2"),
        ("pettingzoo.classic.texas_holdem_v4", {}, "pfsp:0.6,random:0.2,heuristic:0.2"),
        ("pettingzoo.classic.texas_holdem_v4", {"num_players": 3}, "uniform:0.8,random:0.2"),
    ],
    ids=["connect_four", "texas_holdem", "texas_holdem-3p"],
)
def test_league_plays_the_classic_games(env: str, kwargs: dict[str, Any], mix: str) -> None:
    trainer = Trainer(small(env=env, env_kwargs=kwargs, total_steps=300, league_opponents=mix))
    result = trainer.train()
    table = trainer.league.table
    players = 3 if kwargs else 2
    assert result.episodes > 0 and table.total_games > 0
    assert 0 < table.players[LEARNER].games < table.total_games  # the rest: games among frozen players
    for name in ("random", "heuristic"):
        if name in mix:
            assert table.players[name].fixed and table.players[name].games > 0
    if "heuristic" in mix:  # calibrated against random: a higher fixed rating
        assert table.rating("heuristic") > table.rating("random")
    if players == 3:  # pairwise: a 3-seat game tallies the learner against both distinct opponents or one twice
        assert sum(map(sum, table.players[LEARNER].record.values())) >= table.players[LEARNER].games


def test_connect_four_league_run_with_the_board_encoder_reloads_with_eval_and_league(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "c4"
    result = train(small(env="pettingzoo.classic.connect_four_v3", run_dir=str(run), total_steps=256,
                         league_opponents="self:0.5,latest:0.3,alphabeta@1:0.2", league_rating_games=4))
    assert "board" in result.policy.encoder.kinds.values()
    assert main(["eval", str(run), "--opponent", "alphabeta@1", "--episodes", "6", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["ok"] and out["games"] == 6 and out["opponent"] == "alphabeta@1"
    assert main(["league", str(run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"learner", "alphabeta@1", "snapshot-00000"} <= {p["id"] for p in out["players"]}
    table = load_league(run)
    # the search anchor's fixed rating: calibrated against the heuristic, itself calibrated against random (1000)
    assert table.players["alphabeta@1"].fixed and table.rating("alphabeta@1") > 1200
    assert table.players["snapshot-00000"].record["alphabeta@1"]  # rated against the anchor, not only the learner


def test_a_league_traces_each_snapshot_once_per_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    # TorchScript traces are never freed, and a player that made one per batch size (rating games made fresh
    # players at every snapshot) grew a long connect-four league to gigabytes: pool players trace at one batch
    # shape (at most two signatures: with and without masks) and rating games act eagerly
    import shoal.train.speed.traced_acting as traced_acting

    calls = []
    real = traced_acting.trace
    monkeypatch.setattr(traced_acting, "trace", lambda module, inputs: calls.append(inputs[0].shape) or real(
        module, inputs))
    trainer = Trainer(small(env=TICTACTOE, total_steps=4 * 8 * 20, league_rating_games=8,
                            league_opponents="self:0.4,uniform:0.4,random:0.2"))
    trainer.train()
    snapshots = len(trainer.league.snapshots)
    assert snapshots >= 10
    rows = trainer.num_rows
    assert all(shape[0] == rows for shape in calls)  # the learner's and every pool player's: the whole batch
    assert len(calls) <= 2 * (snapshots + 1)
