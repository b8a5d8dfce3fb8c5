"""Self-play leagues on the classic PettingZoo games, trained with the command line's defaults (``--league``,
whose ``league_opponents="auto"`` picks each game's preset mix), on a small CPU.

``tictactoe``
    Trains ``--league`` for a wall-clock budget (default 5 minutes), then plain self-play (the shared policy in
    both seats, no league) for the same number of steps: the peer. Both final policies play 200 games (seats
    alternating, most likely actions) against ``random``, the one-step ``heuristic`` and the exact ``solver``.
    Targets: the league loses none of its 200 games against the solver, and scores at least as well as plain
    self-play against the solver and the heuristic. With ``--seeds`` each seed trains both; the solver target
    holds on every seed, the comparison on the mean score over the seeds (one seed's swings exceed the effect).
``connect_four``
    Trains ``--league`` for a wall-clock budget (default 30 minutes), then plays the run reloaded from its
    directory (what ``shoal eval RUN --opponent X`` does) against ``random``, ``heuristic`` and depth-limited
    alpha-beta (``--search-depth`` plies, default 2). Targets: >= 99%, >= 90% and >= 50% wins.
``texas_holdem``
    Trains ``--league`` for a wall-clock budget (default 10 minutes); mean reward per hand (PettingZoo's: half the
    chips won or lost) of the final policy against ``random`` and ``heuristic``, and of the ``heuristic`` against
    the same opponents (the peer), with 95% confidence intervals.

The step budget is steered by time: ``total_steps`` is re-estimated at every log line from the measured rate so the
(linearly annealed) learning rate reaches ~0 at the deadline, and training stops there. The league table and its
rating plot (``league.png``) are written to the run directory.

    python benchmarks/league.py tictactoe [--minutes 5] [--seed 0 | --seeds 0,1,2] [--games 200] [--run-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shoal.train import TrainConfig, Trainer
from shoal.train.runs.resolve import resolve_env
from shoal.train.selfplay.league import (
    evaluate_match,
    format_league,
    load_league,
    make_player,
    play_match,
    plot_league,
)

GAMES = {
    "tictactoe": ("pettingzoo.classic.tictactoe_v3", 5.0),
    "connect_four": ("pettingzoo.classic.connect_four_v3", 30.0),
    "texas_holdem": ("pettingzoo.classic.texas_holdem_v4", 10.0),
}


class TimeBudget:
    """A log callback steering ``total_steps`` so training ends at the deadline with the learning rate at ~0."""

    def __init__(self, trainer: Trainer, seconds: float) -> None:
        self.trainer = trainer
        self.deadline = time.perf_counter() + seconds
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


def train(env: str, run_dir: Path, seed: int, *, league: bool, minutes: float | None = None,
          steps: int | None = None) -> tuple[Any, float]:
    """Train with the command line's defaults; by a time budget (``minutes``) or a step budget (``steps``)."""
    cfg = TrainConfig(env=env, seed=seed, run_dir=str(run_dir), overwrite=True, league=league,
                      total_steps=steps or 50_000_000, tensorboard=False, log_interval=5.0)
    trainer = Trainer(cfg)
    if minutes is not None:
        trainer.callbacks.append(TimeBudget(trainer, minutes * 60))
    start = time.perf_counter()
    result = trainer.train()
    return result, (time.perf_counter() - start) / 60


def match(run_dir: Path, opponent: str, games: int, seed: int) -> dict[str, Any]:
    """``shoal eval RUN --opponent X``: the run reloaded from disk, most likely actions, seats alternating."""
    return evaluate_match(run_dir, opponent, games, seed=seed)


def wdl(summary: dict[str, Any]) -> str:
    seats = ", ".join(f"seat {k}: {'/'.join(map(str, record))}" for k, record in summary["by_seat"].items())
    return f"{summary['wins']:>3}/{summary['draws']:>3}/{summary['losses']:>3} W/D/L ({seats})"


def tictactoe(args: argparse.Namespace, root: Path) -> tuple[list[bool], Path]:
    env, _ = GAMES["tictactoe"]
    seeds = args.seeds or [args.seed]
    passed = []
    scores: dict[str, dict[str, list[float]]] = {}
    for seed in seeds:
        where = root / f"seed-{seed}" if len(seeds) > 1 else root
        league, minutes = train(env, where / "league", seed, league=True, minutes=args.minutes)
        plain, plain_minutes = train(env, where / "plain", seed, league=False, steps=league.global_step)
        print(f"seed {seed}: tictactoe_v3 --league: {minutes:.1f} min, {league.global_step:,} learner steps; plain "
              f"self-play (peer): {plain_minutes:.1f} min, {plain.global_step:,} steps")
        for opponent in ("random", "heuristic", "solver"):
            for name in ("league", "plain"):
                summary = match(where / name, opponent, args.games, seed + 4242)
                scores.setdefault(opponent, {}).setdefault(name, []).append(summary["score"])
                print(f"  {name:<6} vs {opponent:<9}: {wdl(summary)}, score {summary['score']:.3f}")
                if name == "league" and opponent == "solver":
                    ok = summary["losses"] == 0
                    passed.append(ok)
                    print(f"  target: league loses 0 of {args.games} games to the exact solver: "
                          f"{'met' if ok else 'MISSED'} ({summary['losses']} losses)")
    # one seed's comparison swings by more than the effect (plain self-play's score against the solver was 0.48
    # and 0.215 in two runs of seed 0 whose step counts differed by 0.3%): judged on the mean over seeds
    for opponent in ("heuristic", "solver"):
        league_mean, plain_mean = (float(np.mean(scores[opponent][name])) for name in ("league", "plain"))
        ok = league_mean >= plain_mean
        passed.append(ok)
        print(f"target: league mean score vs {opponent} >= plain self-play's at equal steps over {len(seeds)} "
              f"seed(s): {league_mean:.3f} vs {plain_mean:.3f}: {'met' if ok else 'MISSED'}")
    first = root / f"seed-{seeds[0]}" if len(seeds) > 1 else root
    return passed, first / "league"


def connect_four(args: argparse.Namespace, root: Path) -> tuple[list[bool], Path]:
    env, _ = GAMES["connect_four"]
    result, minutes = train(env, root / "league", args.seed, league=True, minutes=args.minutes)
    print(f"connect_four_v3 --league: {minutes:.1f} min, {result.global_step:,} learner steps")
    passed = []
    search = f"alphabeta@{args.search_depth}"
    for opponent, target in (("random", 0.99), ("heuristic", 0.90), (search, 0.50)):
        summary = match(root / "league", opponent, args.games, args.seed + 4242)
        lo, hi = summary["win_rate_ci"]
        ok = summary["win_rate"] >= target
        passed.append(ok)
        print(f"  league (reloaded) vs {opponent:<12}: {wdl(summary)}, win rate {summary['win_rate']:.1%} "
              f"(95% CI {lo:.1%}-{hi:.1%}); target >= {target:.0%}: {'met' if ok else 'MISSED'}")
    return passed, root / "league"


def chips(returns: list[float]) -> str:
    mean = float(np.mean(returns))
    half = 1.96 * float(np.std(returns, ddof=1)) / math.sqrt(len(returns))
    return f"{mean:+.3f} reward/hand (95% CI {mean - half:+.3f} to {mean + half:+.3f}, {len(returns)} hands)"


def texas_holdem(args: argparse.Namespace, root: Path) -> tuple[list[bool], Path]:
    env, _ = GAMES["texas_holdem"]
    result, minutes = train(env, root / "league", args.seed, league=True, minutes=args.minutes)
    print(f"texas_holdem_v4 --league: {minutes:.1f} min, {result.global_step:,} learner steps")
    env_fn = resolve_env(env)
    learner = make_player(str(root / "league"), env_fn, seed=args.seed)  # the run reloaded from disk
    passed = []
    for opponent in ("random", "heuristic"):
        # a hand's episode return is PettingZoo's reward: half the chips the player won (+) or lost (-)
        mine = play_match(learner, make_player(opponent, env_fn, seed=args.seed + 1), env_fn, args.games,
                          seed=args.seed + 4242)
        peer = play_match(make_player("heuristic", env_fn, seed=args.seed + 2),
                          make_player(opponent, env_fn, seed=args.seed + 3), env_fn, args.games,
                          seed=args.seed + 4242)
        passed.append(float(np.mean(mine.returns)) > 0)
        print(f"  league    vs {opponent:<9}: {chips(mine.returns)}")
        print(f"  heuristic vs {opponent:<9}: {chips(peer.returns)} (peer)")
    return passed, root / "league"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("game", choices=sorted(GAMES))
    parser.add_argument("--minutes", type=float, default=None, help="training budget (default: per game)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=lambda text: [int(x) for x in text.split(",")], default=None,
                        help="tictactoe: comma-separated seeds, each a league and a plain run (default: --seed); "
                             "the comparison with plain self-play is judged on the mean score over them")
    parser.add_argument("--games", type=int, default=200)
    parser.add_argument("--search-depth", type=int, default=2, help="connect four: plies of the alpha-beta opponent")
    parser.add_argument("--run-dir", default=None)
    args = parser.parse_args()
    if args.seeds is not None and (args.game != "tictactoe" or len(set(args.seeds)) != len(args.seeds)):
        parser.error("--seeds takes distinct seeds and only for tictactoe (use --seed for the other games)")
    if args.minutes is None:
        args.minutes = GAMES[args.game][1]
    root = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix=f"shoal-league-{args.game}-"))
    # league_dir: with --seeds, the first seed's league
    passed, league_dir = {"tictactoe": tictactoe, "connect_four": connect_four, "texas_holdem": texas_holdem}[
        args.game](args, root)
    table = load_league(league_dir)
    png = plot_league(table, league_dir / "league.png")
    print(format_league(table).split("\n\n")[0], file=sys.stderr)
    print(json.dumps({"benchmark": f"league-{args.game}", "passed": all(passed), "run_dir": str(league_dir),
                      "png": str(png)}))


if __name__ == "__main__":
    main()
