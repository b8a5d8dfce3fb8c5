"""SuperSuit image wrappers in the pipeline: train an image env end to end on the default CNN and report its
return beside a uniform random policy's, in the same run.

Both are measured the same way: ``--eval-episodes`` whole env episodes (games) on the same evaluation seeds, the
random policy taking uniform legal actions (``shoal.bench.random_actions``), the trained one sampling its own actions
(``--greedy`` for the most likely ones). The training budget is ``--steps`` agent steps; a wall-time cap
(``--minutes``) stops a run early at its last completed update, so slow machines still finish.

    python benchmarks/wrappers.py pistonball       # pettingzoo.butterfly.pistonball_v6, discrete pistons
    python benchmarks/wrappers.py breakout         # ale_py:ALE/Breakout-v5
    python benchmarks/wrappers.py ENV --wrappers SPEC --env-kwargs JSON --steps N --minutes M

Prints one line per policy (``random``, ``trained``) with its mean return, then a JSON line of everything.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shoal import vector
from shoal.bench import random_actions
from shoal.train import TrainConfig, evaluate, make_trainer
from shoal.train.runs.agent_stats import Game, GameTracker
from shoal.train.runs.resolve import resolve_env

#: Presets: env, its keyword arguments, the wrappers, and settings for a short CPU run.
PRESETS: dict[str, dict[str, Any]] = {
    "pistonball": {
        "env": "pettingzoo.butterfly.pistonball_v6",
        # 10 pistons (the env's default is 20): half the agents per game, so a short CPU run sees twice the games
        "env_kwargs": {"continuous": False, "n_pistons": 10, "max_cycles": 125},
        "wrappers": "color_reduction_v0(mode='B'),resize_v1(84,84),frame_stack_v1(3)",
        "config": {"num_envs": 2, "horizon": 32, "learning_rate": 2.5e-4, "minibatch_size": 320,
                   "update_epochs": 2, "ent_coef": 0.01, "gamma": 0.99},
        "steps": 200_000,
    },
    "breakout": {
        "env": "ale_py:ALE/Breakout-v5",
        "env_kwargs": {"repeat_action_probability": 0.0, "max_episode_steps": 4_000},
        "wrappers": "color_reduction_v0(mode='full'),resize_v1(84,84),frame_stack_v1(4)",
        "config": {"num_envs": 8, "horizon": 128, "learning_rate": 2.5e-4, "minibatch_size": 256,
                   "update_epochs": 4, "ent_coef": 0.01, "gamma": 0.99},
        "steps": 200_000,
    },
}


def random_returns(env_fn: Any, episodes: int, seed: int) -> list[float]:
    """Mean return per game of uniform random legal actions: one env, ``episodes`` whole env episodes (games), each
    game's mean over its agents, as :func:`shoal.train.evaluate` measures the trained policy."""
    rng = np.random.default_rng(seed)
    games: list[Game] = []
    with vector.make(env_fn, 1, backend="serial", seed=seed) as vec:
        vec.reset(seed)
        tracker = GameTracker(1, vec.agents_per_env)
        rows, env_ids = np.arange(vec.num_agents), np.zeros(1, np.int64)
        while len(games) < episodes:
            *_, terminals, truncations, infos = vec.step(random_actions(vec, rng, vec.num_agents))
            ended = terminals | truncations
            if ended.any():
                games += tracker.record(rows, env_ids, infos, ended)
    return [game.mean_return for game in games[:episodes]]


class _Deadline:
    """Stops training (as Ctrl-C would, at the last completed update) once ``minutes`` have passed."""

    def __init__(self, minutes: float) -> None:
        self.end = time.monotonic() + 60 * minutes

    def __call__(self, record: Any) -> None:
        if time.monotonic() > self.end:
            raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("env", help=f"a preset ({', '.join(PRESETS)}) or an ENV string")
    parser.add_argument("--wrappers", default=None)
    parser.add_argument("--env-kwargs", type=json.loads, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--minutes", type=float, default=8.0, help="wall-time cap of the training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--eval-seed", type=int, default=12345)
    parser.add_argument("--greedy", action="store_true", help="evaluate the most likely actions, not sampled ones")
    args = parser.parse_args()
    preset = PRESETS.get(args.env, {"env": args.env, "env_kwargs": {}, "wrappers": None, "config": {},
                                    "steps": 200_000})
    wrappers = args.wrappers if args.wrappers is not None else preset["wrappers"]
    env_kwargs = args.env_kwargs if args.env_kwargs is not None else preset["env_kwargs"]
    steps = args.steps or preset["steps"]
    env_fn = resolve_env(preset["env"], env_kwargs, wrappers=wrappers)
    probe = env_fn()
    space = probe.observation_space(probe.possible_agents[0]) if hasattr(probe, "possible_agents") else (
        probe.observation_space)
    probe.close()
    print(f"{preset['env']} with {wrappers}: observation {space}")

    rand = random_returns(env_fn, args.eval_episodes, args.eval_seed)
    print(f"random   mean return {np.mean(rand):8.2f} ± {np.std(rand):.2f} over {len(rand)} episodes")

    config = TrainConfig(env=preset["env"], env_kwargs=env_kwargs, wrappers=wrappers, total_steps=steps,
                         seed=args.seed, tensorboard=False, log_interval=30.0, **preset["config"])
    trainer = make_trainer(config, callbacks=[_Deadline(args.minutes)])
    start = time.perf_counter()
    try:
        trainer.train()
        stopped = False
    except KeyboardInterrupt:
        stopped = True
    seconds = time.perf_counter() - start
    result = evaluate(trainer.policy, env_fn, args.eval_episodes, seed=args.eval_seed, num_envs=1,
                      deterministic=args.greedy)
    trainer.vecenv.close()
    how = "greedy" if args.greedy else "sampled"
    print(f"trained  mean return {result['mean_return']:8.2f} ± {result['std_return']:.2f} over "
          f"{result['episodes']} episodes ({how} actions; {trainer.global_step:,} agent steps in "
          f"{seconds / 60:.1f} min{', stopped by the time cap' if stopped else ''})")
    print(json.dumps({"env": preset["env"], "wrappers": wrappers, "env_kwargs": env_kwargs,
                      "random": float(np.mean(rand)), "trained": result["mean_return"],
                      "steps": trainer.global_step, "minutes": seconds / 60, "stopped_by_cap": stopped}))


if __name__ == "__main__":
    main()
