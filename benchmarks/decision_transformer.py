"""The Decision Transformer on replay data: shoal's DT beside shoal's behaviour cloning on the same dataset.

Data: every decision of a PPO run on CartPole-v1 (``TrainConfig.record_dataset``), the replay of an agent learning
from random play to (nearly) solving the task: episodes of every quality, mostly poor ones.

Targets (2 CPU cores): conditioned on the dataset's best episode return, the DT's return is at least BC's; and the
DT's return rises with the conditioning target over three targets (the median, the 90th percentile and the best of
the dataset's episode returns). Every policy plays the same 20 evaluation episodes with its most likely actions.
BC runs with its defaults for ``--algo bc``; the DT with ``--algo dt``'s defaults but a context of 10 steps and
two blocks (printed below). Both take 3000 gradient steps (BC's of 256 transitions, the DT's of 64 windows).

    python benchmarks/decision_transformer.py [--ppo-steps 40000] [--bc-steps 3000] [--dt-steps 3000] [--seeds 1,2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shoal.datasets import OfflineDataset, load_dataset
from shoal.train import TrainConfig, evaluate, train
from shoal.train.runs.resolve import resolve_env

ENV_ID = "CartPole-v1"
EPISODES = 20
#: the DT's settings besides --algo dt's defaults: a shorter context and fewer blocks keep a CPU run to minutes
DT_SETTINGS = {"context_length": 10, "dt_layers": 2}
QUIET = {"tensorboard": False, "log_interval": 600.0}


def record_replay(steps: int, seed: int, folder: Path) -> OfflineDataset:
    """Every decision of a PPO run of ``steps`` agent steps."""
    path = folder / f"replay-{seed}"
    train(TrainConfig(env=ENV_ID, total_steps=steps, seed=seed, record_dataset=str(path), **QUIET))
    return load_dataset(path)


def run_bc(dataset: OfflineDataset, steps: int, seed: int) -> float:
    """BC's mean return over the evaluation episodes."""
    policy = train(TrainConfig(env=ENV_ID, algo="bc", total_steps=steps, seed=seed, eval_interval=0, **QUIET),
                   dataset=dataset).policy
    return evaluate(policy, resolve_env(ENV_ID), EPISODES, seed=seed + 10_007)["mean_return"]


def run_dt(dataset: OfflineDataset, steps: int, seed: int, targets: list[float]) -> list[float]:
    """The DT's mean return over the evaluation episodes at each target return."""
    policy = train(TrainConfig(env=ENV_ID, algo="dt", total_steps=steps, seed=seed, eval_interval=0, **DT_SETTINGS,
                               **QUIET), dataset=dataset).policy
    return [evaluate(policy, resolve_env(ENV_ID), EPISODES, seed=seed + 10_007, target_return=target)["mean_return"]
            for target in targets]


def main(argv: list[str] | None = None) -> bool:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ppo-steps", type=int, default=40_000, help="agent steps of the PPO run recorded")
    parser.add_argument("--bc-steps", type=int, default=3_000, help="BC's gradient steps")
    parser.add_argument("--dt-steps", type=int, default=3_000, help="the DT's gradient steps")
    parser.add_argument("--seeds", default="1,2")
    args = parser.parse_args(argv)
    dt = TrainConfig(env=ENV_ID, algo="dt", **DT_SETTINGS).resolved(1)
    print(f"DT: context_length={dt.context_length} dt_layers={dt.dt_layers} dt_heads={dt.dt_heads} "
          f"hidden_size={dt.hidden_size} lr={dt.learning_rate} minibatch={dt.minibatch_size} windows, "
          f"{args.dt_steps} steps; BC: --algo bc defaults, {args.bc_steps} steps", flush=True)
    met = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in (int(s) for s in args.seeds.split(",")):
            data = record_replay(args.ppo_steps, seed, Path(folder))
            returns = data.episode_returns()
            targets = [float(np.median(returns)), float(np.percentile(returns, 90)), float(returns.max())]
            print(f"seed {seed}: replay of {args.ppo_steps:,} PPO steps: {data.num_episodes:,} episodes, return "
                  f"mean {returns.mean():.1f}, median {targets[0]:.1f}, 90th percentile {targets[1]:.1f}, best "
                  f"{targets[2]:.1f}", flush=True)
            bc = run_bc(data, args.bc_steps, seed)
            dt_returns = run_dt(data, args.dt_steps, seed, targets)
            for target, value in zip(targets, dt_returns, strict=True):
                print(f"seed {seed}: shoal DT  target {target:7.1f}: return {value:7.1f}", flush=True)
            print(f"seed {seed}: shoal BC                : return {bc:7.1f}", flush=True)
            rises = bool(all(np.diff(dt_returns) > 0))
            at_least_bc = dt_returns[-1] >= bc
            met.append(rises and at_least_bc)
            print(f"seed {seed}: DT at the best target >= BC: {'met' if at_least_bc else 'MISSED'} "
                  f"({dt_returns[-1]:.1f} vs {bc:.1f}); DT return rises with the target: "
                  f"{'met' if rises else 'MISSED'} ({' < '.join(f'{r:.1f}' for r in dt_returns)})", flush=True)
    print(f"\nboth targets met on {sum(met)} of {len(met)} seeds")
    return all(met)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
