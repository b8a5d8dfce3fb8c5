"""Self-play league on connect four (PettingZoo ``connect_four_v3``) on a small CPU.

Trains PPO with ``league=True`` for a wall-clock budget (default 18 minutes, at most 20), then plays the final
learner (deterministic) against two scripted players for 200 games each, seats alternating:

* ``random``: uniformly random legal moves;
* ``heuristic``: one-step lookahead: win if possible, block if needed, else random.

Targets: >= 95% wins against random, >= 60% wins against the heuristic, and the league's ELO of successive
snapshots rises.

Setup. The opponent mix is ``latest:0.6,pfsp:0.2,random:0.1,heuristic:0.1``: 80% of the games are self-play
against frozen snapshots (taken every 25 updates), 20% go to the two scripted baselines, which are the league's
fixed-rating anchors (``random`` at 1000, ``heuristic`` calibrated against it when the league starts); without
games against them the ratings would float free of any reference. The policy is shoal's default actor-critic with
a small CNN over the 6x7x2 board in front of its two 256-unit layers. The step budget is steered by time:
``total_steps`` is re-estimated at every log line from the measured rate so the (linearly annealed) learning
rate reaches ~0 at the deadline, and training stops there.

ELO criterion. Each snapshot enters the league with its parent's (the learner's) rating, earned against the
whole pool and the anchors; the sequence of these entry ratings must rise (Spearman rank correlation with
snapshot order >= 0.8). Snapshots keep being rated afterwards as opponents of the learner, which trains against
them and so beats them more often than their strength against third parties predicts; their current ratings
must still rise on average (newest third rated above the oldest third). Both are printed.

    python benchmarks/league.py [--minutes 18] [--seed 0] [--backend multiprocessing] [--run-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shoal.policies import Policy
from shoal.train import TrainConfig, Trainer
from shoal.train.selfplay.league import format_league, make_scripted, play_match, plot_league
from shoal.train.selfplay.opponents import PolicyPlayer

ENV = "pettingzoo.classic.connect_four_v3"


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman rank correlation (no ties expected)."""
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    if len(x) < 2 or rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


class BoardEncoder(nn.Module):
    """Connect-four boards: flat int8 rows ``[N, 84]`` (``[6, 7, 2]`` boards) -> conv features float32 ``[N, F]``."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(2, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
        )
        self.out_features = channels * 6 * 7

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.reshape(-1, 6, 7, 2).permute(0, 3, 1, 2).to(torch.float32)
        return self.conv(x).flatten(1)


def make_policy(probe: object, encoder: str, hidden: int) -> Policy:
    """The default MLP policy, or the same with a small CNN in front of the trunk (``encoder="cnn"``)."""
    policy = Policy.from_env(probe, hidden_size=hidden, num_layers=2)
    if encoder == "cnn":
        policy.encoder = BoardEncoder()
        first = nn.Linear(policy.encoder.out_features, hidden)
        nn.init.orthogonal_(first.weight, 2**0.5)
        nn.init.zeros_(first.bias)
        policy.trunk[0] = first
    return policy


def entry_ratings(table: Any, snapshots: list[str]) -> list[float]:
    """The rating each snapshot had when it joined the league (its parent's rating then)."""
    out = {}
    for entry in table.history:
        for pid, rating in entry["ratings"].items():
            out.setdefault(pid, rating)
    return [out[pid] for pid in snapshots]


def config(args: argparse.Namespace, run_dir: Path) -> TrainConfig:
    return TrainConfig(
        env=ENV,
        seed=args.seed,
        run_dir=str(run_dir),
        overwrite=True,
        total_steps=10_000_000,  # re-estimated from the measured rate (see the module docstring)
        num_envs=args.num_envs,
        backend=args.backend,
        horizon=32,
        minibatch_size=512,
        update_epochs=4,
        learning_rate=args.lr,
        ent_coef=0.01,
        gamma=0.99,
        gae_lambda=0.95,
        hidden_size=args.hidden,
        league=True,
        league_opponents=args.opponents,
        league_snapshot_interval=args.snapshot_interval,
        checkpoint_interval=100,
        tensorboard=False,
        log_interval=10.0,
    )


class TimeBudget:
    """A log callback steering ``total_steps`` so training ends at the deadline with the learning rate at ~0."""

    def __init__(self, trainer: Trainer, seconds: float) -> None:
        self.trainer = trainer
        self.start = time.perf_counter()
        self.deadline = self.start + seconds
        self.first: tuple[float, int] | None = None

    def __call__(self, record: Any) -> None:
        trainer, now = self.trainer, time.perf_counter()
        if self.first is None:
            self.first = (now, trainer.global_step)
            return
        t0, s0 = self.first
        rate = (trainer.global_step - s0) / max(now - t0, 1e-6)
        remaining = self.deadline - now
        target = trainer.global_step + (int(rate * remaining) if remaining > 0 else 1)
        trainer.config.total_steps = max(trainer.global_step + 1, target) if remaining > 0 else trainer.global_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=18.0, help="training budget (at most 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-envs", type=int, default=32)
    parser.add_argument("--backend", default="multiprocessing")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--opponents", default="latest:0.6,pfsp:0.2,random:0.1,heuristic:0.1")
    parser.add_argument("--snapshot-interval", type=int, default=25)
    parser.add_argument("--games", type=int, default=200)
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--encoder", choices=("mlp", "cnn"), default="cnn")
    parser.add_argument("--hidden", type=int, default=256)
    args = parser.parse_args()
    if args.minutes > 20:
        parser.error("the budget is at most 20 minutes")

    run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="shoal-league-")) / "c4"
    cfg = config(args, run_dir)
    from shoal import vector
    from shoal.train.runs.resolve import resolve_env

    env_fn = resolve_env(ENV)
    probe = vector.make(env_fn, 1, backend="serial")
    policy = make_policy(probe, args.encoder, args.hidden)
    probe.close()
    trainer = Trainer(cfg, policy=policy)
    budget = TimeBudget(trainer, args.minutes * 60)
    trainer.callbacks.append(budget)
    t0 = time.perf_counter()
    result = trainer.train()
    minutes = (time.perf_counter() - t0) / 60
    league = trainer.league
    table = league.table

    learner = PolicyPlayer("final learner", result.policy.eval(), deterministic=True)
    rng = np.random.default_rng(args.seed + 1)
    lines = [
        f"league self-play on connect_four_v3 ({args.backend}, {args.num_envs} envs, {args.encoder} policy, "
        f"mix {args.opponents}): "
        f"{minutes:.1f} min training, {result.global_step:,} learner steps ({result.sps:,.0f}/s), "
        f"{result.updates} updates, {len(league.snapshots)} snapshots, {table.total_games:,} rated games",
    ]
    passed = []
    for name, target in (("random", 0.95), ("heuristic", 0.60)):
        opponent = make_scripted(name, trainer.vecenv.action_layout, "connect_four", rng)
        summary = play_match(learner, opponent, env_fn, args.games, seed=args.seed + 4242).summary()
        lo, hi = summary["win_rate_ci"]
        ok = summary["win_rate"] >= target
        passed.append(ok)
        lines.append(
            f"final learner vs {name:<9}: {summary['wins']:>3}/{summary['games']} wins, {summary['draws']} draws "
            f"({summary['win_rate']:.1%}, 95% CI {lo:.1%}-{hi:.1%}); target >= {target:.0%}: "
            f"{'PASS' if ok else 'FAIL'}"
        )
    snapshots = league.snapshots
    entry = entry_ratings(table, snapshots)
    current = [table.rating(pid) for pid in snapshots]
    rho = spearman(list(range(len(entry))), entry)
    third = max(1, len(current) // 3)
    old, new = float(np.mean(current[:third])), float(np.mean(current[-third:]))
    rising = rho >= 0.8 and new > old
    passed.append(rising)
    step = max(1, len(entry) // 10)
    lines.append(
        f"ELO of successive snapshots at entry: {entry[0]:.0f} -> {entry[-1]:.0f}, Spearman rho {rho:.2f} "
        f"(target >= 0.80); current ratings: oldest third {old:.0f}, newest third {new:.0f} (target: newest "
        f"higher); learner {table.rating('learner'):.0f}"
        + "".join(f", {pid} anchor {p.rating:.0f}" for pid, p in table.players.items() if p.fixed)
        + f": {'PASS' if rising else 'FAIL'}"
    )
    lines.append(
        f"  every {step}th snapshot, entry rating: {', '.join(f'{r:.0f}' for r in entry[::step])}; "
        f"current: {', '.join(f'{r:.0f}' for r in current[::step])}"
    )
    png = plot_league(table, run_dir / "league.png")
    for line in lines:
        print(line)
    print(format_league(table).split("\n\n")[0], file=sys.stderr)
    print(json.dumps({"benchmark": "league", "passed": all(passed), "run_dir": str(run_dir), "png": str(png),
                      "minutes": round(minutes, 2), "learner_steps": result.global_step}))


if __name__ == "__main__":
    main()
