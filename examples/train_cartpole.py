"""Train PPO on CartPole-v1 with the public API, then evaluate the policy.

    python examples/train_cartpole.py [--total-steps 150000] [--run-dir runs/example-cartpole]

The same as ``shoal train CartPole-v1 --eval-episodes 20``; the run directory holds checkpoints, TensorBoard
events and a CSV of every scalar (``shoal plot RUN_DIR`` draws them).
"""

from __future__ import annotations

import argparse

import shoal
from shoal.train import TrainConfig

parser = argparse.ArgumentParser()
parser.add_argument("--total-steps", type=int, default=150_000)
parser.add_argument("--run-dir", default=None)
args = parser.parse_args()

config = TrainConfig(
    env="CartPole-v1", total_steps=args.total_steps, seed=1, run_dir=args.run_dir, eval_episodes=20
)


def show(record: shoal.train.runs.logger.LogRecord) -> None:
    scalars = record.scalars
    print(
        f"step {record.step:>7,}  return {scalars.get('charts/episode_return', 0):6.1f}  "
        f"sps {scalars['perf/sps']:,.0f}"
    )


result = shoal.train(config, callbacks=[show])
evaluation = result.evaluation
print(f"mean evaluation return over {evaluation['episodes']} episodes: {evaluation['mean_return']:.1f}")
