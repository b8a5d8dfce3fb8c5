"""SAC on Pendulum-v1: shoal beside Stable-Baselines3's SAC with the rl-baselines3-zoo hyperparameters.

Target (2 CPU cores): shoal's deterministic evaluation return >= -200 after 20k steps on every seed, at >= 3x
SB3's steps/s at the same update-to-data ratio (one gradient step of a 256-sample minibatch per env step, from
the same ``learning_starts=100``).

SB3 runs as the zoo configures Pendulum-v1 (``learning_rate=1e-3``; otherwise SB3's defaults: a 1M buffer,
``batch_size=256``, ``learning_starts=100``, ``tau=0.005``, ``gamma=0.99``, ``train_freq=1``,
``gradient_steps=1``, two 256-unit layers, a tuned temperature), with as many torch threads as shoal
(``--sb3-threads`` sets others). shoal runs as ``shoal train Pendulum-v1 --algo sac`` does (its defaults and its
Pendulum-v1 preset, 64-unit layers; printed below) except ``learning_starts=100``. Both are evaluated on 10
deterministic episodes.

Same-network lines (one seed each; ``--skip-same-network`` leaves them out) show what the preset's smaller
network is worth: shoal with SB3's 256-unit layers, and SB3 with the preset's 64-unit layers. On a CPU a
256-unit SAC step is compute-bound in both libraries (about 0.5 GFLOP per gradient step), so at equal width the
ratio is far below the preset's.

    python benchmarks/sac.py [--steps 20000] [--seeds 1,2,3,4,5] [--sb3-seeds 1,2] [--skip-sb3] [--hidden-size 256]
                             [--skip-same-network] [--sb3-threads N]

``--lunar``: shoal SAC at its defaults (``shoal train LunarLanderContinuous-v3 --algo sac``) for ``--lunar-steps``
agent steps (500k), a checkpoint kept every 50k; each is evaluated on 20 episodes with the most likely actions.
Target: an evaluation >= 200 by 500k steps. ``--lunar-run-dir DIR`` evaluates the checkpoints of a run made with
``shoal train`` instead of training (SB3 is left out here: at the zoo's 400-300 networks it would take hours on a
CPU).

    python benchmarks/sac.py --lunar [--lunar-steps 500000] [--seed 1] [--lunar-run-dir runs/llc]

``--pettingzoo``: SAC against PPO on a continuous-action PettingZoo env, ``pettingzoo.sisl.multiwalker_v9``
(3 walkers carrying a package, 31 observations and 4 torques each, a 75-number ``state()``; waterworld_v4 needs
pymunk, which is not installed here), at an equal budget of agent steps, one line each beside a uniformly random
policy: PPO with its defaults, parameter-shared SAC (decentralized critics) and SAC with the centralized critics
(``critic_input="auto"``: the env's state). Each trained policy is evaluated on 10 episodes with its most likely
actions (the same env seeds for all, random included); ``return`` is the mean per-walker return of an episode,
``length`` its steps (a fall ends it; 500 at most), ``train`` the mean return of the last 100 training episodes.

    python benchmarks/sac.py --pettingzoo [--pz-steps 60000] [--seed 0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import Tensor

from benchmarks.mappo import ScriptedPolicy
from shoal.train import TrainConfig, TrainResult, evaluate, train
from shoal.train.runs.resolve import resolve_env

ENV_ID = "Pendulum-v1"
LUNAR_ENV = "LunarLanderContinuous-v3"
LUNAR_EVERY = 50_000
LUNAR_EVAL_EPISODES = 20
PZ_ENV = "pettingzoo.sisl.multiwalker_v9"
PZ_EVAL_EPISODES = 10
#: SAC's settings for the PettingZoo comparison that differ from its defaults (the budget is the point: a gradient
#: step of SAC's default 256-unit networks costs about 30 ms on a loaded 2-core machine, so one per agent step
#: would take the whole quarter of an hour): one gradient step per 4 agent steps with 128-unit networks, and one
#: slot id per walker (parameter sharing).
PZ_SAC = {"hidden_size": 128, "utd_ratio": 0.25, "agent_ids": True}
#: SB3's default, which the zoo keeps for Pendulum-v1; shoal uses the same so both take as many gradient steps
SB3_LEARNING_STARTS = 100


def run_shoal(steps: int, seed: int, hidden_size: int | None = None) -> tuple[float, float]:
    """(deterministic eval return over 10 episodes, steps/s) of one shoal run (``hidden_size``: None, the
    default)."""
    result = train(TrainConfig(env=ENV_ID, algo="sac", total_steps=steps, seed=seed, eval_episodes=10,
                               hidden_size=hidden_size, learning_starts=SB3_LEARNING_STARTS, tensorboard=False,
                               log_interval=60.0))
    return result.evaluation["mean_return"], result.global_step / result.seconds


def run_sb3(steps: int, seed: int, hidden_size: int = 256) -> tuple[float, float]:
    """(deterministic eval return over 10 episodes, steps/s) of one SB3 run with the zoo's hyperparameters
    (``hidden_size``: its layers' width, 256 as the zoo leaves it)."""
    import gymnasium as gym
    from stable_baselines3 import SAC
    from stable_baselines3.common.evaluation import evaluate_policy

    model = SAC("MlpPolicy", gym.make(ENV_ID), learning_rate=1e-3, seed=seed, verbose=0,
                policy_kwargs={"net_arch": [hidden_size, hidden_size]})
    start = time.perf_counter()
    model.learn(steps)
    seconds = time.perf_counter() - start
    mean, _ = evaluate_policy(model, gym.make(ENV_ID), n_eval_episodes=10, deterministic=True)
    return float(mean), steps / seconds


def run_lunar(steps: int, seed: int, run_dir: str | None) -> None:
    """Train (or take ``run_dir``'s run) and evaluate its checkpoints on :data:`LUNAR_ENV` (see the docstring)."""
    import tempfile

    from shoal.train.runs.checkpoint import list_checkpoints
    from shoal.train.runs.evaluate import load_policy_from_checkpoint

    with tempfile.TemporaryDirectory(prefix="shoal-sac-lunar-") as tmp:
        if run_dir is None:
            run_dir = tmp
            cfg = TrainConfig(env=LUNAR_ENV, algo="sac", total_steps=steps, seed=seed, run_dir=run_dir,
                              tensorboard=False, log_interval=60.0, eval_episodes=0, keep_checkpoints=1_000)
            resolved = cfg.resolved(1)
            cfg = cfg.replace(checkpoint_interval=max(1, LUNAR_EVERY // (resolved.num_envs * resolved.horizon)))
            print(f"{LUNAR_ENV}: shoal SAC at its defaults (hidden_size={resolved.hidden_size} lr="
                  f"{resolved.learning_rate} num_envs={resolved.num_envs} utd_ratio={resolved.utd_ratio} "
                  f"learning_starts={resolved.learning_starts}), {steps:,} steps, seed {seed}", flush=True)
            result = train(cfg)
            print(f"trained {result.global_step:,} steps in {result.seconds / 60:.1f} min "
                  f"({result.sps:.1f} steps/s)", flush=True)
        best = None
        checkpoints = list_checkpoints(run_dir)
        for checkpoint in checkpoints:
            policy, config, env_fn = load_policy_from_checkpoint(checkpoint)
            resolved = config.resolved(1)  # SAC's update is horizon vector steps of num_envs single-agent envs
            step = int(checkpoint.stem.removeprefix("update_")) * resolved.num_envs * resolved.horizon
            if step % LUNAR_EVERY >= LUNAR_EVERY // 10 and checkpoint != checkpoints[-1]:
                continue  # only the checkpoints nearest each 50k, and the last
            evaluation = evaluate(policy, env_fn, LUNAR_EVAL_EPISODES, seed=seed + 10_007)
            ret, std = evaluation["mean_return"], evaluation["std_return"]
            print(f"step {step:>9,}: eval {ret:8.1f} +- {std:6.1f} over {LUNAR_EVAL_EPISODES} episodes", flush=True)
            if ret >= 200 and step <= 500_000 and best is None:
                best = step
    print(f"target eval >= 200 by 500k steps: {'met at step ' + format(best, ',') if best else 'MISSED'}")


def _uniform_torques(obs: Tensor, slot: Tensor, generator: torch.Generator) -> Tensor:
    """Multiwalker's 4 torques, each uniform in its Box ``[-1, 1]``."""
    return torch.rand((obs.shape[0], 4), generator=generator) * 2 - 1


def _pz_line(name: str, evaluation: dict, result: TrainResult | None = None) -> str:
    train_part = "" if result is None else f"train {result.episode_return:8.1f}   {result.sps:7.1f} agent steps/s"
    return (f"{name:<24} return {evaluation['mean_return']:8.1f}  length {evaluation['mean_length']:5.1f}   "
            f"{train_part}")


def run_pettingzoo(steps: int, seed: int) -> None:
    """PPO, SAC and centralized-critic SAC on :data:`PZ_ENV` at ``steps`` agent steps, beside random actions."""
    env_fn = resolve_env(PZ_ENV, {})
    eval_seed = seed + 10_007  # the seed of train()'s own evaluation, so every line plays the same episodes
    print(f"{PZ_ENV}: {steps:,} agent steps per method, seed {seed}; SAC with {PZ_SAC} (other settings at their "
          f"defaults), PPO at its defaults; evaluation: {PZ_EVAL_EPISODES} episodes, most likely actions", flush=True)
    started = time.perf_counter()
    random_eval = evaluate(ScriptedPolicy(_uniform_torques, 3, seed), env_fn, PZ_EVAL_EPISODES, seed=eval_seed)
    print(_pz_line("random", random_eval), flush=True)
    runs = [("PPO", {"algo": "ppo"}), ("SAC", {"algo": "sac", **PZ_SAC}),
            ("SAC centralized critic", {"algo": "sac", **PZ_SAC, "critic_input": "auto"})]
    for name, fields in runs:
        result = train(TrainConfig(env=PZ_ENV, total_steps=steps, seed=seed, eval_episodes=PZ_EVAL_EPISODES,
                                   tensorboard=False, log_interval=60.0, **fields))
        print(_pz_line(name, result.evaluation, result), flush=True)
    print(f"total {(time.perf_counter() - started) / 60:.1f} min", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--seeds", default="1,2,3,4,5")
    parser.add_argument("--sb3-seeds", default="1,2")
    parser.add_argument("--skip-sb3", action="store_true")
    parser.add_argument("--hidden-size", type=int, default=None,
                        help="shoal's layer width (default: its own; 256 is SB3's, for a same-network figure)")
    parser.add_argument("--skip-same-network", action="store_true",
                        help="leave out the equal-width lines (shoal at 256 units, SB3 at shoal's width)")
    parser.add_argument("--sb3-threads", type=int, default=0,
                        help="SB3's torch threads (0: shoal's, so both run with as many threads)")
    parser.add_argument("--lunar", action="store_true", help=f"SAC on {LUNAR_ENV} instead (see above)")
    parser.add_argument("--lunar-steps", type=int, default=500_000)
    parser.add_argument("--lunar-run-dir", default=None, help="evaluate this run's checkpoints instead of training")
    parser.add_argument("--pettingzoo", action="store_true",
                        help=f"compare SAC with PPO on {PZ_ENV} instead (see above)")
    parser.add_argument("--pz-steps", type=int, default=60_000, help="agent steps per method with --pettingzoo")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --pettingzoo runs")
    args = parser.parse_args()
    if args.pettingzoo:
        run_pettingzoo(args.pz_steps, args.seed)
        return
    if args.lunar:
        run_lunar(args.lunar_steps, args.seed, args.lunar_run_dir)
        return
    cfg = TrainConfig(env=ENV_ID, algo="sac", hidden_size=args.hidden_size).resolved(1)
    # one thread count for both: with 2 threads on a busy 2-core machine SB3 slows down many times over
    sb3_threads = args.sb3_threads or cfg.torch_threads
    print(f"shoal SAC settings (defaults and the env preset): num_envs={cfg.num_envs} hidden_size={cfg.hidden_size} "
          f"lr={cfg.learning_rate} minibatch={cfg.minibatch_size} utd_ratio={cfg.utd_ratio} "
          f"learning_starts={SB3_LEARNING_STARTS} tau={cfg.tau} torch_threads={cfg.torch_threads}")
    shoal_runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        ret, sps = run_shoal(args.steps, seed, args.hidden_size)
        shoal_runs.append((ret, sps))
        print(f"shoal SAC  seed {seed}: eval {ret:8.1f}   {sps:7.1f} steps/s", flush=True)
    sb3_runs = []
    if not args.skip_sb3:
        torch.set_num_threads(sb3_threads)
        print(f"SB3 SAC (zoo): 256-unit layers, torch threads {torch.get_num_threads()}")
        for seed in (int(s) for s in args.sb3_seeds.split(",")):
            ret, sps = run_sb3(args.steps, seed)
            sb3_runs.append((ret, sps))
            print(f"SB3 SAC    seed {seed}: eval {ret:8.1f}   {sps:7.1f} steps/s", flush=True)
    same_network = None
    if not (args.skip_sb3 or args.skip_same_network or cfg.hidden_size == 256):
        seed = int(args.seeds.split(",")[0])
        wide = run_shoal(args.steps, seed, 256)
        print(f"shoal SAC  seed {seed}, 256-unit layers: eval {wide[0]:8.1f}   {wide[1]:7.1f} steps/s", flush=True)
        torch.set_num_threads(sb3_threads)
        narrow = run_sb3(args.steps, seed, cfg.hidden_size)
        print(f"SB3 SAC    seed {seed}, {cfg.hidden_size}-unit layers: eval {narrow[0]:8.1f}   {narrow[1]:7.1f} "
              "steps/s", flush=True)
        same_network = (wide[1], narrow[1])
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
        print(f"steps/s ratio shoal ({cfg.hidden_size} units) / SB3 zoo (256 units): {ratio:.2f}x "
              f"(target >= 3x: {'met' if ratio >= 3 else 'MISSED'})")
        if same_network:
            wide_sps, narrow_sps = same_network
            print(f"equal width, 256 units: shoal / SB3 {wide_sps / sb3_sps:.2f}x; {cfg.hidden_size} units: shoal "
                  f"(median) / SB3 {shoal_sps / narrow_sps:.2f}x")


def _median_sps(sps: float) -> str:
    return f"median {sps:,.1f} steps/s"


if __name__ == "__main__":
    main()
