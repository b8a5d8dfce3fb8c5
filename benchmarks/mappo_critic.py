"""MAPPO's critic designs side by side on cooperative mpe2 envs: the residual critic (MAPPO's default), one MLP over
the whole centralized input (``critic_residual=False``) and IPPO's local critic.

The residual critic (:class:`shoal.policies.ResidualCritic`) is a local critic (the slot's own observation features
and one-hots) plus an MLP over the whole input, the env's global state included, whose output weights start at
zero. It became MAPPO's default because on simple_spread, whose local observations already hold every relative
position, one MLP over the whole input trailed IPPO. This script checks that it does not lose where the global state
carries what an agent cannot see:

* ``simple_spread_v3``: 3 agents cover 3 landmarks; every agent sees all relative positions (the global state adds
  little);
* ``simple_speaker_listener_v4``: the speaker sees the goal colour, the listener the positions; neither local
  critic can tell how good a state is;
* ``simple_reference_v3``: each agent's goal is known only to the other agent (the global state holds both).

Every run trains ``shoal train ENV --algo mappo`` as a user would (its defaults and presets, ``max_cycles=25``),
with the critic chosen here; IPPO is the same configuration with ``algo="ppo"``, value normalization and a local
critic. Columns: ``final`` is the mean per-agent return of the last 300 env episodes of training (sampled
actions), ``eval`` the mean per-agent return of ``--eval-episodes`` env episodes with the most likely actions on
fixed evaluation seeds; ``mean ± std`` over the seeds. The verdict compares the residual critic's final return
with each other design's: met when it is at least as high or within one standard deviation of that design's seeds.

    python benchmarks/mappo_critic.py                      # 3 envs x 3 designs x seeds 1-2 at 500k agent steps
    python benchmarks/mappo_critic.py --envs simple_reference_v3 --seeds 1,2,3 --steps 1000000
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shoal.train import TrainConfig, evaluate, train
from shoal.train.config import ALGO_DEFAULTS, ENV_PRESETS
from shoal.train.runs.resolve import resolve_env

ENVS = ("simple_spread_v3", "simple_speaker_listener_v4", "simple_reference_v3")
DESIGNS = ("residual", "one MLP", "IPPO")
ENV_KWARGS = {"max_cycles": 25}


def config(env: str, design: str, steps: int, seed: int) -> TrainConfig:
    """The run of ``design`` on mpe2's ``env`` (see the module docstring)."""
    name = f"mpe2.{env}"
    common: dict[str, Any] = dict(env=name, env_kwargs=ENV_KWARGS, total_steps=steps, seed=seed, log_interval=5.0,
                                  stats_window=300)
    if design == "IPPO":
        return TrainConfig(**{**ALGO_DEFAULTS["mappo"], **ENV_PRESETS["mappo"].get(name, {}), "algo": "ppo",
                              "value_norm": "running", "critic_residual": False, **common})
    return TrainConfig(algo="mappo", critic_residual=design == "residual", **common)


def job(env: str, design: str, steps: int, seed: int, eval_episodes: int) -> dict[str, Any]:
    """Train one run in a worker process; its final training return, evaluation and wall time."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    result = train(config(env, design, steps, seed))
    seconds = time.perf_counter() - start
    evaluation = evaluate(result.policy, resolve_env(f"mpe2.{env}", ENV_KWARGS), eval_episodes, seed=10_000,
                          num_envs=8, deterministic=True)["mean_return"]
    return {"env": env, "design": design, "seed": seed, "final": result.episode_return, "eval": evaluation,
            "seconds": seconds, "steps": result.global_step}


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    return f"{mean:.2f}" if len(values) < 2 else f"{mean:.2f}±{statistics.stdev(values):.2f}"


def verdicts(by: dict[tuple[str, str], list[dict[str, Any]]], envs: list[str], designs: list[str]) -> list[str]:
    """One line per env and other design: the residual critic's mean final return against that design's, met when
    at least its mean minus one standard deviation of its seeds (``by``: the runs of each ``(env, design)``)."""
    lines = []
    for env in envs:
        ours = by.get((env, "residual"))
        for other in designs:
            theirs = by.get((env, other))
            if other == "residual" or not ours or not theirs:
                continue
            mine = statistics.fmean(r["final"] for r in ours)
            values = [r["final"] for r in theirs]
            bar = statistics.fmean(values) - (statistics.stdev(values) if len(values) > 1 else 0.0)
            verdict = "met" if mine >= bar else "MISSED"
            lines.append(f"{env}: residual final {mine:.2f} ({len(ours)} seed(s)) vs {other} "
                         f"{statistics.fmean(values):.2f} ({len(values)} seed(s)) -> {verdict}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", default=",".join(ENVS), help=f"comma-separated, of {', '.join(ENVS)}")
    parser.add_argument("--designs", default=",".join(DESIGNS), help=f"comma-separated, of {', '.join(DESIGNS)}")
    parser.add_argument("--seeds", default="1,2", help="comma-separated seeds")
    parser.add_argument("--steps", type=int, default=500_000, help="agent steps per run")
    parser.add_argument("--eval-episodes", type=int, default=100, help="env episodes per evaluation")
    parser.add_argument("--workers", type=int, default=2, help="runs trained at a time (one core each)")
    args = parser.parse_args()
    envs = [e for e in args.envs.split(",") if e]
    designs = [d for d in args.designs.split(",") if d]
    for name, given, valid in (("--envs", envs, ENVS), ("--designs", designs, DESIGNS)):
        unknown = sorted(set(given) - set(valid))
        if unknown:
            parser.error(f"{name}: unknown {unknown}; valid: {list(valid)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    print(f"MAPPO critic designs: {len(envs)} env(s) x {len(designs)} design(s) x seeds {seeds}, "
          f"{args.steps:,} agent steps each, {args.workers} at a time", flush=True)
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(job, env, design, args.steps, seed, args.eval_episodes)
                   for env in envs for seed in seeds for design in designs]
        results = []
        for future in futures:
            try:
                r = future.result()
            except Exception as error:  # one failed run must not lose the others
                print(f"  a run failed: {type(error).__name__}: {error}", flush=True)
                continue
            results.append(r)
            print(f"  {r['env']:<28} {r['design']:<9} seed {r['seed']}: final {r['final']:.2f}, eval "
                  f"{r['eval']:.2f} ({r['steps']:,} steps, {r['seconds']:.0f} s)", flush=True)
    print(f"\n{'env':<28} {'critic':<9} {'seeds':>5} {'final':>14} {'eval':>14} {'wall s':>8}")
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        by.setdefault((r["env"], r["design"]), []).append(r)
    for (env, design), rows in by.items():
        print(f"{env:<28} {design:<9} {len(rows):>5} {spread([r['final'] for r in rows]):>14} "
              f"{spread([r['eval'] for r in rows]):>14} {statistics.fmean(r['seconds'] for r in rows):>8.0f}")
    print()
    for text in verdicts(by, envs, designs):
        print(text)

if __name__ == "__main__":
    main()
