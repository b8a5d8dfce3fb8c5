"""Offline RL on datasets recorded from shoal's own runs: behaviour cloning, IQL and the Decision Transformer.

For each env, one PPO run (its defaults and env preset, ``record_dataset`` on) gives three datasets:

* **replay**: every decision the run collected, from its first random steps to its last (``record_dataset``);
* **expert**: the final policy's own rollouts (sampled actions), ``--record-steps`` decisions;
* **medium**: the rollouts of the checkpoint nearest ``--medium-at`` of the run (a half-trained policy).

Then BC learns from each dataset, IQL from replay and medium, and the Decision Transformer from replay (with
``--algo dt``'s defaults, printed), evaluated online at three target returns: the replay data's 10th and 50th
percentile episode returns and the expert's return. The percentiles are returns many replay episodes reached (a DT
can only be asked for returns its data shows) and the 10th lies far enough below the median for the difference in
return to stand out of the noise; the expert's return is the top of the data (the run's last episodes were played
by nearly that policy) and the level BC on expert data is judged at. The replay's best episode return would be a
lucky outlier above what any policy of the run reaches on average. Every policy is evaluated on the same
``--eval-episodes`` episodes (the same env seeds, most likely actions), beside the expert's and uniform random
actions' returns, in the same run; each return is printed with its standard error over those episodes (``se``).
A normalized score ``(R - random) / (expert - random)`` makes returns of different envs (Pendulum's are negative)
comparable: 1.0 is the expert, 0.0 random.

``--seeds`` repeats the DT-vs-BC comparison for several training seeds on the same replay data: per seed, BC and
the DT are trained on it and judged on the same evaluation episodes.

Connect four: a short self-play league run (``--league``) records its learner's games (``record_dataset``), then
BC learns from ``--c4-decisions`` moves of the games its final policy plays against itself (sampled moves, a share
``--c4-epsilon`` of them replaced by random legal ones, so the data also covers positions that arise against
random play) and is matched against random play. BC cannot beat what it copies: the league's own line is printed
beside it.

    python benchmarks/offline.py                       # CartPole-v1, Pendulum-v1, LunarLander-v3, connect four
    python benchmarks/offline.py --quick               # CartPole-v1 and Pendulum-v1, smaller budgets
    python benchmarks/offline.py --envs CartPole-v1 --seed 2
    python benchmarks/offline.py --quick --envs Pendulum-v1 --seeds 1,2,3

Targets checked (printed as ``target ... met`` or ``MISSED``): BC on expert data >= 0.95 normalized; IQL on replay
data > BC on replay data; BC on connect-four league games wins >= 90% against random play; and, per training seed,
the Decision Transformer on replay data:

* **at least BC's return** (both on replay data): the DT conditioned on the highest target (the expert's return,
  chosen before looking, not the best of the three results) has a mean return no lower than BC's minus the
  combined 2-standard-error margin ``2 * sqrt(se_dt**2 + se_bc**2)``; the line says whether DT's mean is above
  BC's or below it within that margin;
* **its return rises with its target**: the highest target's return exceeds the lowest's by more than their
  combined 2-SE margin, and no step up in target (10th percentile -> median -> expert) lowers the return by more
  than that step's combined 2-SE margin. A step whose returns differ by less than the noise is not a fall.
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


def mean_se(returns: list[float] | np.ndarray) -> tuple[float, float]:
    """The mean of per-episode ``returns`` and its standard error (sample standard deviation over sqrt(n); 0 for
    a single episode)."""
    values = np.asarray(returns, np.float64)
    se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
    return float(values.mean()), se


def margin(se_a: float, se_b: float) -> float:
    """The combined 2-standard-error margin of the difference of two independent means."""
    return 2.0 * float(np.hypot(se_a, se_b))


def at_least(dt: tuple[float, float], bc: tuple[float, float]) -> tuple[bool, str]:
    """"DT >= BC" for ``(mean, se)`` pairs: met when the DT's mean is at least BC's minus their combined 2-SE
    margin. Returns the verdict and which case it is."""
    gap, noise = dt[0] - bc[0], margin(dt[1], bc[1])
    if gap >= 0:
        return True, f"DT's mean is above BC's by {gap:.1f}"
    if -gap <= noise:
        return True, f"DT's mean is below BC's by {-gap:.1f}, within the 2-SE margin {noise:.1f}"
    return False, f"DT's mean is below BC's by {-gap:.1f}, more than the 2-SE margin {noise:.1f}"


def rises(returns: list[tuple[float, float]]) -> tuple[bool, str]:
    """"Returns rise with the target" for ``(mean, se)`` pairs in increasing target order: the last exceeds the
    first by more than their combined 2-SE margin, and no step lowers the return by more than that step's
    combined 2-SE margin. Returns the verdict and the reason."""
    (low, low_se), (high, high_se) = returns[0], returns[-1]
    span, noise = high - low, margin(low_se, high_se)
    if span <= noise:
        return False, f"highest target's return exceeds the lowest's by {span:.1f}, not more than the 2-SE margin " \
                      f"{noise:.1f}"
    for step, ((a, a_se), (b, b_se)) in enumerate(itertools.pairwise(returns), start=1):
        if a - b > margin(a_se, b_se):
            return False, f"step {step} up in target lowers the return by {a - b:.1f}, more than its 2-SE margin " \
                          f"{margin(a_se, b_se):.1f}"
    return True, f"highest target's return exceeds the lowest's by {span:.1f} > 2-SE margin {noise:.1f}; no step " \
                 "lowers it by more than its margin"


def _random_return(env: str, episodes: int, seed: int) -> tuple[float, float]:
    """Mean return (and its standard error) of uniform random actions over ``episodes`` whole episodes (shoal's
    recorder with the ``random`` source on one env: only its last episode can be cut short by the budget, and it
    is left out)."""
    data = record_dataset("random", env, steps=episodes * 600, seed=seed)
    return mean_se(data.episode_returns()[:-1][:episodes])


def _evaluate(policy: torch.nn.Module, env: str, episodes: int, seed: int, **kwargs: Any) -> tuple[float, float]:
    """``(mean, se)`` of the return over ``episodes`` evaluation episodes (env seeds from ``seed``)."""
    return mean_se(evaluate(policy, resolve_env(env), episodes, seed=seed, **kwargs)["returns"])


def _offline(algo: str, env: str, data: OfflineDataset, steps: int, seed: int, **fields: Any) -> torch.nn.Module:
    config = TrainConfig(env=env, algo=algo, total_steps=steps, seed=seed, log_interval=0.0, eval_episodes=0,
                         tensorboard=False, **fields)
    return train(config, dataset=data).policy


def _line(env: str, dataset: str, episodes: int, data_return: float, algo: str, ret: tuple[float, float],
          expert: float, rand: float, seconds: float, note: str = "") -> dict[str, Any]:
    mean, se = ret
    score = (mean - rand) / (expert - rand) if expert != rand else float("nan")
    print(f"{env:<16} {dataset:<7} {episodes:>5} {data_return:>10.1f}  {algo:<14} {mean:>9.1f} {se:>6.1f} "
          f"{score:>7.2f} {seconds:>7.1f}  {note}".rstrip(), flush=True)
    return {"env": env, "dataset": dataset, "episodes": episodes, "data_return": data_return, "algo": algo,
            "return": mean, "se": se, "normalized": score, "seconds": seconds, "note": note}


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
    dt_config = TrainConfig(env=env, algo="dt").resolved(agents_per_env=1)
    print(f"# {env}: PPO {result.global_step:,} steps in {ppo_seconds:.0f} s; expert eval {expert_return[0]:.1f}, "
          f"medium ({medium_ckpt.name}) eval {medium_return[0]:.1f}, random {rand[0]:.1f}; DT: --algo dt defaults "
          f"(context_length={dt_config.context_length} dt_layers={dt_config.dt_layers} dt_heads={dt_config.dt_heads} "
          f"hidden_size={dt_config.hidden_size} lr={dt_config.learning_rate} minibatch={dt_config.minibatch_size} "
          f"windows), {budget['dt']} steps", flush=True)
    best, worst = expert_return[0], rand[0]
    rows = [_line(env, "-", episodes, float("nan"), "random", rand, best, worst, 0.0),
            _line(env, "-", episodes, float("nan"), "expert (PPO)", expert_return, best, worst, ppo_seconds)]
    scores: dict[tuple[str, str], tuple[float, float]] = {}
    datasets = {"expert": expert, "medium": medium, "replay": replay}
    for name, data in datasets.items():
        jobs = [("bc", {})] + ([("iql", {})] if name != "expert" else [])
        for algo, fields in jobs:
            start = time.perf_counter()
            policy = _offline(algo, env, data, budget[algo], args.seed, **fields)
            ret = _evaluate(policy, env, episodes, seed)
            rows.append(_line(env, name, data.num_episodes, float(data.episode_returns().mean()), algo, ret,
                              best, worst, time.perf_counter() - start))
            scores[(name, algo)] = ret
    # The Decision Transformer on the replay data, conditioned on three target returns, beside BC on the same data,
    # for each training seed.
    quantiles = np.percentile(replay.episode_returns(), [10, 50])
    targets = [float(quantiles[0]), float(quantiles[1]), float(best)]
    replay_return = float(replay.episode_returns().mean())
    verdicts = []  # printed after every row of the env
    for train_seed in args.seeds or [args.seed]:
        tag = f" (training seed {train_seed})" if args.seeds else ""
        bc = scores[("replay", "bc")]
        if train_seed != args.seed:
            start = time.perf_counter()
            bc = _evaluate(_offline("bc", env, replay, budget["bc"], train_seed), env, episodes, seed)
            rows.append(_line(env, "replay", replay.num_episodes, replay_return, "bc", bc, best, worst,
                              time.perf_counter() - start, f"training seed {train_seed}"))
        start = time.perf_counter()
        dt = _offline("dt", env, replay, budget["dt"], train_seed)
        dt_seconds = time.perf_counter() - start
        dt_returns = [_evaluate(dt, env, episodes, seed, target_return=target) for target in targets]
        for target, ret in zip(targets, dt_returns, strict=True):
            rows.append(_line(env, "replay", replay.num_episodes, replay_return, "dt", ret, best, worst, dt_seconds,
                              f"target {target:.1f}" + (f", training seed {train_seed}" if args.seeds else "")))
        ok, why = at_least(dt_returns[-1], bc)
        verdicts.append((f"{env} DT on replay >= BC on replay{tag}", ok,
                         f"DT at target {targets[-1]:.1f}: {dt_returns[-1][0]:.1f} +- {dt_returns[-1][1]:.1f} se vs BC "
                         f"{bc[0]:.1f} +- {bc[1]:.1f} se; {why}"))
        ok, why = rises(dt_returns)
        steps = ", ".join(f"{t:.1f} -> {m:.1f} +- {e:.1f}" for t, (m, e) in zip(targets, dt_returns, strict=True))
        verdicts.append((f"{env} DT return rises with its target{tag}", ok, f"{steps}; {why}"))
    bc_expert = (scores[("expert", "bc")][0] - worst) / (best - worst)
    _target(f"{env} BC on expert >= 0.95 normalized", bc_expert >= 0.95, f"{bc_expert:.2f}")
    _target(f"{env} IQL on replay > BC on replay", scores[("replay", "iql")][0] > scores[("replay", "bc")][0],
            f"{scores[('replay', 'iql')][0]:.1f} vs {scores[('replay', 'bc')][0]:.1f}")
    for verdict in verdicts:
        _target(*verdict)
    return rows


def run_connect_four(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    # BC cannot beat the league it copies: at 600k steps the league won 96% against random, at 800k 98.5%, which
    # leaves BC room above 90%
    steps = args.c4_league_steps or (150_000 if args.quick else 800_000)
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CartPole-v1 and Pendulum-v1, smaller budgets")
    parser.add_argument("--envs", default=None, help="comma-separated envs of BUDGETS, and/or connect_four")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--record-steps", type=int, default=20_000, help="decisions in the expert/medium datasets")
    parser.add_argument("--medium-at", type=float, default=0.3, help="where in the run the medium checkpoint is")
    parser.add_argument("--games", type=int, default=200, help="connect-four games against random play")
    parser.add_argument("--seeds", type=lambda text: [int(v) for v in text.split(",")], default=None,
                        help="comma-separated training seeds of BC and the DT on the replay data (default: --seed)")
    parser.add_argument("--c4-league-steps", type=int, default=None,
                        help="agent steps of the connect-four league (default: 800k, 150k with --quick)")
    parser.add_argument("--c4-decisions", type=int, default=40_000,
                        help="decisions of the league's final policy recorded for connect-four BC")
    parser.add_argument("--c4-epsilon", type=float, default=0.2,
                        help="share of the recorded connect-four moves replaced by random legal ones")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of every result")
    args = parser.parse_args(argv)
    envs = (args.envs.split(",") if args.envs else
            ["CartPole-v1", "Pendulum-v1"] if args.quick else [*BUDGETS, "connect_four"])
    torch.set_num_threads(1)
    print(f"{'env':<16} {'data':<7} {'eps':>5} {'data ret':>10}  {'algo':<14} {'return':>9} {'se':>6} "
          f"{'norm':>7} {'wall s':>7}  note")
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
