"""shoal bench: random legal actions and the JSON report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pettingzoo.classic import tictactoe_v3

from shoal.bench import random_actions
from shoal.cli import main
from shoal.vector import make


def test_random_actions_are_always_legal() -> None:
    rng = np.random.default_rng(0)
    with make(tictactoe_v3.env, 4, seed=0) as vecenv:
        vecenv.reset(seed=0)
        for _ in range(200):
            actions = random_actions(vecenv, rng, vecenv.num_agents)
            live = vecenv.masks
            legal = vecenv.action_masks[np.flatnonzero(live), actions[live]]
            assert legal.all()
            vecenv.step(actions)


def test_bench_command_prints_one_json_line(capsys) -> None:
    assert main(["bench", "CartPole-v1", "--seconds", "0.2", "--num-envs", "2", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert report["ok"] and report["command"] == "bench" and report["agent_steps_per_s"] > 0
    assert report["steps"] % 2 == 0



def test_bench_in_envpool_style_batches(capsys) -> None:
    argv = ["bench", "CartPole-v1", "--seconds", "0.3", "--num-envs", "4", "--backend", "multiprocessing",
            "--num-workers", "2", "--batch-size", "2", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["ok"] and report["batch_size"] == 2 and report["agent_steps_per_s"] > 0
    assert report["steps"] % 2 == 0 and report["steps"] > 0


def test_bench_names_a_batch_size_that_does_not_tile_the_workers() -> None:
    from shoal.bench import measure_throughput
    from shoal.errors import APIUsageError
    from shoal.train.runs.resolve import resolve_env

    with pytest.raises(APIUsageError, match="batch_size"):
        measure_throughput(resolve_env("CartPole-v1"), num_envs=4, backend="multiprocessing", num_workers=2,
                           batch_size=3, seconds=0.1)
