"""shoal bench: random legal actions and the JSON report."""

from __future__ import annotations

import json

import numpy as np
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
