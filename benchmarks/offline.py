"""Offline RL on datasets recorded from shoal's own runs: behaviour cloning, IQL and the Decision Transformer.

For each env, one PPO run (its defaults and env preset, ``record_dataset`` on) gives three datasets:

* **replay**: every decision the run collected, from its first random steps to its last (``record_dataset``);
* **expert**: the final policy's own rollouts (sampled actions), ``--record-steps`` decisions;
* **medium**: the rollouts of the checkpoint nearest ``--medium-at`` of the run (a half-trained policy).

Then BC learns from each dataset, IQL from replay and medium, and the Decision Transformer from replay, evaluated
online at three target returns (the replay data's 10th and 50th percentile episode returns and the expert's
return). Every policy is evaluated on the same ``--eval-episodes`` episodes (most likely actions), beside the
expert's and uniform random actions' returns, in the same run. A normalized score ``(R - random) / (expert -
random)`` makes returns of different envs (Pendulum's are negative) comparable: 1.0 is the expert, 0.0 random.

Connect four: a short self-play league run (``--league``) records its learner's games (``record_dataset``), then
BC learns from the games its final policy plays against itself and is matched against random play.

    python benchmarks/offline.py                       # CartPole-v1, Pendulum-v1, LunarLander-v3, connect four
    python benchmarks/offline.py --quick               # CartPole-v1 and Pendulum-v1, smaller budgets
    python benchmarks/offline.py --envs CartPole-v1 --seed 2

Targets checked (printed as ``target ... met`` or ``MISSED``): BC on expert data >= 0.95 normalized; IQL on replay
data > BC on replay data; DT on replay data >= BC on replay data at its best target, with returns rising over the
three targets; BC on connect-four league games wins >= 90% against random play.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shoal.datasets import OfflineDataset, load_dataset
from shoal.train import TrainConfig, evaluate, train
from shoal.train.record import record_dataset
from shoal.train.runs.checkpoint import list_checkpoints
from shoal.train.runs.evaluate import load_policy_from_checkpoint
from shoal.train.runs.resolve import resolve_env
from shoal.train.selfplay.league import evaluate_match

#: Per env: PPO's training budget (agent steps) and the offline algorithms' gradient steps (full, quick).
BUDGETS: dict[str, dict[str, tuple[int, int]]] = {
    "CartPole-v1": {"ppo": (150_000, 100_000), "bc": (5_000, 3_000), "iql": (20_000, 5_000), "dt": (3_000, 1_500)},
    "Pendulum-v1": {"ppo": (150_000, 100_000), "bc": (5_000, 3_000), "iql": (20_000, 5_000), "dt": (3_000, 1_500)},
    "LunarLander-v3": {"ppo": (400_000, 300_000), "bc": (10_000, 5_000), "iql": (30_000, 15_000),
                       "dt": (4_000, 2_000)},
}
CONNECT_FOUR = "pettingzoo.classic.connect_four_v3"


def _random_return(env: str, episodes: int, seed: int) -> float:
    """Mean return of uniform random actions over ``episodes`` whole episodes (shoal's recorder with the
    ``random`` source on one env: only its last episode can be cut short by the budget, and it is left out)."""
    data = record_dataset("random", env, steps=episodes * 600, seed=seed)
    return float(np.mean(data.episode_returns()[:-1][:episodes]))


def _evaluate(policy: torch.nn.Module, env: str, episodes: int, seed: int, **kwargs: Any) -> float:
    return float(evaluate(policy, resolve_env(env), episodes, seed=seed, **kwargs)["mean_return"])


def _offline(algo: str, env: str, data: OfflineDataset, steps: int, seed: int, **fields: Any) -> torch.nn.Module:
    config = TrainConfig(env=env, algo=algo, total_steps=steps, seed=seed, log_interval=0.0, eval_episodes=0,
                         tensorboard=False, **fields)
    return train(config, dataset=data).policy


def _line(env: str, dataset: str, episodes: int, data_return: float, algo: str, ret: float, expert: float,
          rand: float, seconds: float, note: str = "") -> dict[str, Any]:
    score = (ret - rand) / (expert - rand) if expert != rand else float("nan")
    print(f"{env:<16} {dataset:<7} {episodes:>5} {data_return:>10.1f}  {algo:<14} {ret:>9.1f} {score:>7.2f} "
          f"{seconds:>7.1f}  {note}", flush=True)
    return {"env": env, "dataset": dataset, "episodes": episodes, "data_return": data_return, "algo": algo,
            "return": ret, "normalized": score, "seconds": seconds, "note": note}


def _target(name: str, ok: bool, detail: str) -> None:
    print(f"target {name}: {'met' if ok else 'MISSED'} ({detail})", flush=True)


def run_env(env: str, args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    mode = 1 if args.quick else 0
    budget = {key: value[mode] for key, value in BUDGETS[env].items()}
    run_dir = workdir / f"{env}-ppo"
    start = time.perf_counter()
    updates = budget["ppo"] // TrainConfig(env=env).resolved(agents_per_env=1).batch_size
    config = TrainConfig(env=env, total_steps=budget["ppo"], seed=args.seed, run_dir=str(run_dir),
                         record_dataset=str(workdir / f"{env}-replay"), checkpoint_interval=max(1, updates // 20),
                         keep_checkpoints=1_000, tensorboard=False, log_interval=0.0, overwrite=True)
    result = train(config)
    ppo_seconds = time.perf_counter() - start
    replay = load_dataset(result.dataset)
    expert_policy = result.policy
    episodes, seed = args.eval_episodes, args.seed + 1_000
    rand = _random_return(env, episodes, seed)
    expert_return = _evaluate(expert_policy, env, episodes, seed)
    checkpoints = list_checkpoints(run_dir)
    medium_ckpt = checkpoints[min(len(checkpoints) - 1, int(args.medium_at * len(checkpoints)))]
    medium_policy, _, _ = load_policy_from_checkpoint(medium_ckpt)
    medium_return = _evaluate(medium_policy, env, episodes, seed)
    expert = record_dataset(run_dir, steps=args.record_steps, seed=args.seed + 1)
    medium = record_dataset(medium_ckpt, steps=args.record_steps, seed=args.seed + 2)
    print(f"# {env}: PPO {result.global_step:,} steps in {ppo_seconds:.0f} s; expert eval {expert_return:.1f}, "
          f"medium ({medium_ckpt.name}) eval {medium_return:.1f}, random {rand:.1f}", flush=True)
    rows = [_line(env, "-", episodes, float("nan"), "random", rand, expert_return, rand, 0.0),
            _line(env, "-", episodes, float("nan"), "expert (PPO)", expert_return, expert_return, rand, ppo_seconds)]
    scores: dict[tuple[str, str], float] = {}
    datasets = {"expert": expert, "medium": medium, "replay": replay}
    for name, data in datasets.items():
        jobs = [("bc", {})] + ([("iql", {})] if name != "expert" else [])
        for algo, fields in jobs:
            start = time.perf_counter()
            policy = _offline(algo, env, data, budget[algo], args.seed, **fields)
            ret = _evaluate(policy, env, episodes, seed)
            rows.append(_line(env, name, data.num_episodes, float(data.episode_returns().mean()), algo, ret,
                              expert_return, rand, time.perf_counter() - start))
            scores[(name, algo)] = ret
    # The Decision Transformer on the replay data, conditioned on three target returns.
    quantiles = np.percentile(replay.episode_returns(), [10, 50])
    targets = [float(quantiles[0]), float(quantiles[1]), float(expert_return)]
    start = time.perf_counter()
    dt = _offline("dt", env, replay, budget["dt"], args.seed)
    dt_seconds = time.perf_counter() - start
    dt_returns = []
    for target in targets:
        ret = _evaluate(dt, env, episodes, seed, target_return=target)
        dt_returns.append(ret)
        rows.append(_line(env, "replay", replay.num_episodes, float(replay.episode_returns().mean()), "dt", ret,
                          expert_return, rand, dt_seconds, f"target {target:.1f}"))
    bc_expert = (scores[("expert", "bc")] - rand) / (expert_return - rand)
    _target(f"{env} BC on expert >= 0.95 normalized", bc_expert >= 0.95, f"{bc_expert:.2f}")
    _target(f"{env} IQL on replay > BC on replay", scores[("replay", "iql")] > scores[("replay", "bc")],
            f"{scores[('replay', 'iql')]:.1f} vs {scores[('replay', 'bc')]:.1f}")
    _target(f"{env} DT on replay >= BC on replay", max(dt_returns) >= scores[("replay", "bc")],
            f"{max(dt_returns):.1f} vs {scores[('replay', 'bc')]:.1f}")
    rising = all(b >= a for a, b in itertools.pairwise(dt_returns))
    _target(f"{env} DT return rises with its target", rising,
            ", ".join(f"{t:.1f} -> {r:.1f}" for t, r in zip(targets, dt_returns, strict=True)))
    return rows


def run_connect_four(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    steps = 150_000 if args.quick else 400_000
    run_dir = workdir / "c4-league"
    start = time.perf_counter()
    result = train(TrainConfig(env=CONNECT_FOUR, league=True, total_steps=steps, seed=args.seed,
                               run_dir=str(run_dir), record_dataset=str(workdir / "c4-league-games"),
                               tensorboard=False, log_interval=0.0, overwrite=True))
    league_seconds = time.perf_counter() - start
    league_vs_random = evaluate_match(run_dir, "random", args.games, seed=args.seed + 7)
    start = time.perf_counter()
    # the final policy in both seats, sampling its moves (its most likely ones would replay one game), 8 games at once;
    # with --c4-epsilon some moves are random, so the games also reach positions random play leads to (cloned on
    # pure self-play, BC took the league's most likely move in 91% of self-play positions, 62% of positions of games
    # with half the moves random)
    games = record_dataset(run_dir, steps=args.c4_decisions, seed=args.seed + 3, num_envs=8,
                           epsilon=args.c4_epsilon)
    record_seconds = time.perf_counter() - start
    start = time.perf_counter()
    bc_dir = workdir / "c4-bc"
    bc = TrainConfig(env=CONNECT_FOUR, algo="bc", total_steps=3_000 if args.quick else 6_000, seed=args.seed,
                     run_dir=str(bc_dir), eval_episodes=0, tensorboard=False, log_interval=0.0, overwrite=True)
    train(bc, dataset=games)
    bc_vs_random = evaluate_match(bc_dir, "random", args.games, seed=args.seed + 7)
    bc_seconds = time.perf_counter() - start
    recorded = load_dataset(result.dataset)
    settings = bc.resolved()
    print(f"# connect four: league {result.global_step:,} steps in {league_seconds:.0f} s, recorded "
          f"{recorded.num_steps:,} of its learner's decisions; {games.num_steps:,} decisions of its final policy's "
          f"self-play games (sampled moves, epsilon {args.c4_epsilon:g}) recorded in {record_seconds:.0f} s",
          flush=True)
    print(f"# connect four BC: {settings.total_steps:,} gradient steps of {settings.minibatch_size}, hidden_size "
          f"{settings.hidden_size}, learning_rate {settings.learning_rate:g} on {games.num_episodes:,} seat-episodes",
          flush=True)
    rows = []
    for name, match, seconds in (("league", league_vs_random, league_seconds), ("bc", bc_vs_random, bc_seconds)):
        low, high = match["win_rate_ci"]
        print(f"connect_four     {name:<7} vs random: win {match['win_rate']:.3f} [{low:.3f}, {high:.3f}] over "
              f"{match['games']} games  {seconds:.0f} s", flush=True)
        rows.append({"env": "connect_four", "algo": name, "win_rate": match["win_rate"], "games": match["games"],
                     "seconds": seconds})
    _target("connect four BC on league games beats random >= 90%", bc_vs_random["win_rate"] >= 0.9,
            f"{bc_vs_random['win_rate']:.3f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CartPole-v1 and Pendulum-v1, smaller budgets")
    parser.add_argument("--envs", default=None, help="comma-separated envs of BUDGETS, and/or connect_four")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--record-steps", type=int, default=20_000, help="decisions in the expert/medium datasets")
    parser.add_argument("--medium-at", type=float, default=0.3, help="where in the run the medium checkpoint is")
    parser.add_argument("--games", type=int, default=200, help="connect-four games against random play")
    parser.add_argument("--c4-decisions", type=int, default=40_000,
                        help="decisions of the league's final policy recorded for connect-four BC")
    parser.add_argument("--c4-epsilon", type=float, default=0.2,
                        help="share of the recorded connect-four moves replaced by random legal ones")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of every result")
    args = parser.parse_args()
    envs = (args.envs.split(",") if args.envs else
            ["CartPole-v1", "Pendulum-v1"] if args.quick else [*BUDGETS, "connect_four"])
    torch.set_num_threads(1)
    print(f"{'env':<16} {'data':<7} {'eps':>5} {'data ret':>10}  {'algo':<14} {'return':>9} {'norm':>7} "
          f"{'wall s':>7}  note")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="shoal-offline-") as tmp:
        for env in envs:
            if env == "connect_four":
                rows += run_connect_four(args, Path(tmp))
            else:
                rows += run_env(env, args, Path(tmp))
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
