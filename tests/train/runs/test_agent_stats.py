"""Games (whole env episodes) and per-agent statistics, from real PettingZoo envs whose agents die at different
times: training logs and evaluations count games, with the agents' own episodes beside them."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest
import torch

from shoal.envs.squad import SquadEnv
from shoal.policies import Policy
from shoal.train import TrainConfig, train
from shoal.train.api import make_trainer
from shoal.train.runs.agent_stats import AgentStats, GameTracker
from shoal.train.runs.evaluate import evaluate
from shoal.vector import make

SQUAD = functools.partial(SquadEnv, num_agents=4, num_cues=3, max_steps=12)


def _squad_policy() -> Policy:
    vec = make(SQUAD, 1, backend="serial")
    try:
        return Policy.from_env(vec, hidden_size=16)
    finally:
        vec.close()


def test_evaluating_one_episode_plays_one_whole_game_of_agents_that_die_apart() -> None:
    # An untrained squad echoes the wrong cue about 2 times in 3: its agents die at different steps.
    torch.manual_seed(0)  # the weights and the sampled actions
    result = evaluate(_squad_policy(), SQUAD, 1, seed=3, deterministic=False)
    assert result["episodes"] == 1 and len(result["returns"]) == 1
    assert result["agent_episodes"] == 4  # every agent of that game ended in it, not just the first death
    lengths = result["agent_lengths"]
    assert len(set(lengths)) > 1
    assert result["mean_length"] == max(lengths)
    assert result["team_returns"] == [pytest.approx(sum(result["agent_returns"]))]
    assert result["mean_return"] == pytest.approx(sum(result["agent_returns"]) / 4)


def test_evaluation_counts_games_of_knights_archers_zombies() -> None:
    pytest.importorskip("pymunk")
    from pettingzoo.butterfly import knights_archers_zombies_v11

    env_fn = functools.partial(knights_archers_zombies_v11.parallel_env, max_cycles=40, line_death=True)
    vec = make(env_fn, 1, backend="serial")
    try:
        policy = Policy.from_env(vec, hidden_size=16)
    finally:
        vec.close()
    result = evaluate(policy, env_fn, 2, seed=0, deterministic=False)
    assert result["episodes"] == 2 and result["agent_episodes"] == 8  # 2 games of 4 agents
    assert max(result["agent_lengths"]) <= 40 and result["mean_length"] <= 40


def test_training_logs_count_games_with_agent_episodes_beside_them() -> None:
    cfg = TrainConfig(algo="mappo", env="squad", env_kwargs={"num_agents": 4, "num_cues": 3, "max_steps": 12},
                      total_steps=400, num_envs=2, horizon=8, minibatch_size=32, log_interval=0.0,
                      tensorboard=False)
    trainer = make_trainer(cfg)
    resets = [0]
    original = trainer._finish

    def spy(carry: Any) -> None:  # count env resets: "reset_info" in any row of an env's block
        blocks = [carry.infos[i : i + 4] for i in range(0, len(carry.infos), 4)]
        resets[0] += sum(any("reset_info" in info for info in block) for block in blocks)
        original(carry)

    trainer._finish = spy  # type: ignore[method-assign]
    result = trainer.train()
    scalars = trainer._scalars({}, 1, 1.0)
    assert trainer.agent_stats is not None
    assert result.episodes == resets[0] > 0  # games, not agent deaths
    assert trainer.agent_stats.agent_episodes >= 4 * result.episodes
    assert scalars["charts/episodes"] == result.episodes
    assert scalars["charts/agent_episodes"] == trainer.agent_stats.agent_episodes
    assert {"charts/episode_return", "charts/episode_length", "charts/agent_episode_return",
            "charts/agent_episode_length"} <= set(scalars)


def test_eval_episodes_after_training_plays_that_many_games() -> None:
    result = train(env="squad", env_kwargs={"num_agents": 4, "num_cues": 3, "max_steps": 12}, total_steps=64,
                   num_envs=2, horizon=8, minibatch_size=32, eval_episodes=1, tensorboard=False)
    evaluation = result.evaluation
    assert evaluation is not None and evaluation["episodes"] == 1 and evaluation["agent_episodes"] == 4


def test_games_close_on_reset_and_feed_team_returns() -> None:
    tracker = GameTracker(num_envs=2, agents_per_env=3)
    stats = AgentStats(num_envs=2, agents_per_env=3, agents=["adversary_0", "adversary_1", "agent_0"], window=10)
    rows, env_ids = np.arange(6), np.arange(2)
    ended = np.zeros(6, bool)
    infos: list[dict[str, Any]] = [{} for _ in range(6)]
    ended[1] = True  # env 0: adversary_1 dies first
    infos[1] = {"episode": {"return": -2.0, "length": 3}}
    games = tracker.record(rows, env_ids, infos, ended)
    stats.record(rows, env_ids, infos, ended, None, games)
    assert games == [] and "charts/team_return" not in stats.scalars()
    ended[:] = False
    ended[[0, 2]] = True  # then the env's episode ends: the others end and a new episode starts
    infos = [{} for _ in range(6)]
    infos[0] = {"episode": {"return": 5.0, "length": 8}, "reset_info": {}}
    infos[2] = {"episode": {"return": 1.0, "length": 8}, "reset_info": {}}
    infos[1] = {"reset_info": {}}
    games = tracker.record(rows, env_ids, infos, ended)
    stats.record(rows, env_ids, infos, ended, None, games)
    assert len(games) == 1 and games[0].env == 0 and games[0].slots == [1, 0, 2]
    assert games[0].length == 8 and games[0].total_return == 4.0 and games[0].mean_return == pytest.approx(4 / 3)
    assert stats.scalars() == {
        "charts/agent_episodes": 3.0,
        "charts/agent_episode_return": pytest.approx(4 / 3),
        "charts/agent_episode_length": pytest.approx(19 / 3),
        "charts/team_return": 4.0,
        "teams/adversary/episode_return": 3.0,
        "teams/agent/episode_return": 1.0,
        "agents/adversary_0/episode_return": 5.0,
        "agents/adversary_1/episode_return": -2.0,
        "agents/agent_0/episode_return": 1.0,
    }
