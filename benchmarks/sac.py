"""SAC on Pendulum-v1: shoal beside Stable-Baselines3's SAC with the rl-baselines3-zoo hyperparameters.

Target (2 CPU cores): shoal's deterministic evaluation return >= -200 after 20k steps on every seed, at >= 3x
SB3's steps/s at the same update-to-data ratio (one gradient step of a 256-sample minibatch per env step, from
the same ``learning_starts=100``).

SB3 runs as the zoo configures Pendulum-v1 (``learning_rate=1e-3``; otherwise SB3's defaults: a 1M buffer,
``batch_size=256``, ``learning_starts=100``, ``tau=0.005``, ``gamma=0.99``, ``train_freq=1``,
``gradient_steps=1``, two 256-unit layers, a tuned temperature), with torch's default threads. shoal runs with
its defaults for ``--algo sac`` (printed below) except ``learning_starts=100``. Both are evaluated on 10
deterministic episodes.

    python benchmarks/sac.py [--steps 20000] [--seeds 1,2,3,4,5] [--sb3-seeds 1,2] [--skip-sb3] [--hidden-size 256]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shoal.train import TrainConfig, train

ENV_ID = "Pendulum-v1"
#: SB3's default, which the zoo keeps for Pendulum-v1; shoal uses the same so both take as many gradient steps
SB3_LEARNING_STARTS = 100


def run_shoal(steps: int, seed: int, hidden_size: int | None = None) -> tuple[float, float]:
    """(deterministic eval return over 10 episodes, steps/s) of one shoal run (``hidden_size``: None, the
    default)."""
    result = train(TrainConfig(env=ENV_ID, algo="sac", total_steps=steps, seed=seed, eval_episodes=10,
                               hidden_size=hidden_size, learning_starts=SB3_LEARNING_STARTS, tensorboard=False,
                               log_interval=60.0))
    return result.evaluation["mean_return"], result.global_step / result.seconds


def run_sb3(steps: int, seed: int) -> tuple[float, float]:
    """(deterministic eval return over 10 episodes, steps/s) of one SB3 run with the zoo's hyperparameters."""
    import gymnasium as gym
    from stable_baselines3 import SAC
    from stable_baselines3.common.evaluation import evaluate_policy

    model = SAC("MlpPolicy", gym.make(ENV_ID), learning_rate=1e-3, seed=seed, verbose=0)
    start = time.perf_counter()
    model.learn(steps)
    seconds = time.perf_counter() - start
    mean, _ = evaluate_policy(model, gym.make(ENV_ID), n_eval_episodes=10, deterministic=True)
    return float(mean), steps / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--sb3-seeds", default="1,2")
    parser.add_argument("--skip-sb3", action="store_true")
    parser.add_argument("--hidden-size", type=int, default=None,
                        help="shoal's layer width (default: its own; 256 is SB3's, for a same-network figure)")
    args = parser.parse_args()
    cfg = TrainConfig(env=ENV_ID, algo="sac", hidden_size=args.hidden_size).resolved(1)
    print(f"shoal SAC defaults: num_envs={cfg.num_envs} hidden_size={cfg.hidden_size} lr={cfg.learning_rate} "
          f"minibatch={cfg.minibatch_size} utd_ratio={cfg.utd_ratio} learning_starts={SB3_LEARNING_STARTS} "
          f"tau={cfg.tau} torch_threads={cfg.torch_threads}")
    shoal_runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        ret, sps = run_shoal(args.steps, seed, args.hidden_size)
        shoal_runs.append((ret, sps))
        print(f"shoal SAC  seed {seed}: eval {ret:8.1f}   {sps:7.1f} steps/s", flush=True)
    sb3_runs = []
    if not args.skip_sb3:
        for seed in (int(s) for s in args.sb3_seeds.split(",")):
            ret, sps = run_sb3(args.steps, seed)
            sb3_runs.append((ret, sps))
            print(f"SB3 SAC    seed {seed}: eval {ret:8.1f}   {sps:7.1f} steps/s", flush=True)
    returns = [r for r, _ in shoal_runs]
    shoal_sps = statistics.median(s for _, s in shoal_runs)
    print(f"\n{ENV_ID} after {args.steps:,} steps")
    print(f"shoal SAC: eval mean {statistics.mean(returns):8.1f}, worst {min(returns):8.1f} over {len(returns)} "
          f"seeds; {_median_sps(shoal_sps)}")
    met_return = min(returns) >= -200
    print(f"target eval >= -200 on every seed: {'met' if met_return else 'MISSED'}")
    if sb3_runs:
        sb3_sps = statistics.median(s for _, s in sb3_runs)
        sb3_returns = [r for r, _ in sb3_runs]
        print(f"SB3 SAC (zoo): eval mean {statistics.mean(sb3_returns):8.1f}, worst {min(sb3_returns):8.1f} over "
              f"{len(sb3_returns)} seeds; {_median_sps(sb3_sps)}")
        ratio = shoal_sps / sb3_sps
        print(f"steps/s ratio shoal / SB3: {ratio:.2f}x (target >= 3x: {'met' if ratio >= 3 else 'MISSED'})")


def _median_sps(sps: float) -> str:
    return f"median {sps:,.1f} steps/s"


if __name__ == "__main__":
    main()
