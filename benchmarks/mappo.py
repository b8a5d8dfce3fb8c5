"""MAPPO vs IPPO on mpe2.simple_spread_v3, beside a random policy and a scripted heuristic; then dying agents
(knights_archers_zombies_v11) and heterogeneous agents (simple_tag_v3).

simple_spread_v3 (3 agents, 3 landmarks, ``max_cycles=25``): every method is evaluated by
:func:`shoal.train.evaluate` on the same env seeds (``--eval-seed``), reporting the mean per-agent episode return:

* ``random``: uniform actions (about -27);
* ``heuristic``: agent ``i`` heads for landmark ``i`` (greedy axis move towards ``landmark - 0.5 * velocity``;
  about -12.5);
* ``IPPO``: parameter-shared PPO (agent ids, value normalization, MAPPO's defaults), local critic;
* ``MAPPO``: the same plus the centralized critic (the env's ``state()``, agent-specific).

IPPO and MAPPO train with the same seed and the same budget of agent steps, one after the other in this process
(2 CPU cores, shared). For each the table gives the steps and minutes it took, its evaluation return with greedy
and with sampled actions, the return of its last training episodes (sampled), its training curve at equal steps,
and when its training return first reached the heuristic's. Targets: MAPPO reaches the heuristic's return within
30 minutes, and is no worse than IPPO at equal steps.

Then MAPPO on knights_archers_zombies_v11 (archers and knights die mid-episode): the mean team return (all agents
of an env episode together) over the run; and on simple_tag_v3 (3 predators with 16-dim observations, 1 prey with
14-dim ones, padded into one layout): the per-team returns over the run.

    python benchmarks/mappo.py [--steps 2400000] [--seed 0] [--kaz-steps 400000] [--tag-steps 300000]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shoal.train import TrainConfig, evaluate, train
from shoal.train.logger import LogRecord
from shoal.train.mappo import MAPPO_DEFAULTS, mappo_config
from shoal.train.resolve import resolve_env

SPREAD = "mpe2.simple_spread_v3"
KAZ = "pettingzoo.butterfly.knights_archers_zombies_v11"
TAG = "mpe2.simple_tag_v3"


# ------------------------------------------------------------------------------------------------------------
# Scripted policies, run through the same evaluate() as the trained ones
# ------------------------------------------------------------------------------------------------------------


class _Out(NamedTuple):
    action: Tensor


class ScriptedPolicy(nn.Module):
    """A fixed rule behind the :class:`~shoal.policies.Policy` call contract (for :func:`shoal.train.evaluate`).

    Args:
        rule: ``(obs float32 [B, 18], slot int64 [B], generator) -> actions int64 [B]``.
        agents: slots per env (the rule gets each row's slot index).
    """

    def __init__(self, rule: Callable[[Tensor, Tensor, torch.Generator], Tensor], agents: int, seed: int) -> None:
        super().__init__()
        self.rule = rule
        self.num_agent_ids = agents
        self.generator = torch.Generator().manual_seed(seed)
        self._device_anchor = nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, obs: Tensor, state: Any = None, *, agent_ids: Tensor | None = None, **_: Any) -> _Out:
        assert agent_ids is not None
        return _Out(self.rule(obs.float(), agent_ids, self.generator))

    def clip_action(self, action: Tensor) -> Tensor:
        return action


def random_rule(obs: Tensor, slot: Tensor, generator: torch.Generator) -> Tensor:
    """Uniform over the 5 moves."""
    return torch.randint(0, 5, (obs.shape[0],), generator=generator)


def heuristic_rule(obs: Tensor, slot: Tensor, generator: torch.Generator) -> Tensor:
    """Agent ``i`` moves along the larger axis of ``landmark_i - 0.5 * velocity`` (observation: velocity 0:2,
    position 2:4, landmarks relative 4:10); no-op when within 0.02."""
    index = 4 + 2 * slot.long().clamp(0, 2)
    rows = torch.arange(obs.shape[0])
    target = torch.stack([obs[rows, index], obs[rows, index + 1]], 1) - 0.5 * obs[:, 0:2]
    x, y = target[:, 0], target[:, 1]
    horizontal = x.abs() > y.abs()
    action = torch.where(horizontal, torch.where(x > 0, 2, 1), torch.where(y > 0, 4, 3))
    return torch.where(target.abs().amax(1) < 0.02, 0, action).long()


# ------------------------------------------------------------------------------------------------------------
# Training with a recorded curve
# ------------------------------------------------------------------------------------------------------------


class Curve:
    """Callback recording ``(step, seconds, scalars)`` of every log record."""

    def __init__(self) -> None:
        self.points: list[tuple[int, float, dict[str, float]]] = []

    def __call__(self, record: LogRecord) -> None:
        self.points.append((record.step, record.elapsed, dict(record.scalars)))

    def value_at(self, step: float, name: str) -> float:
        """The last logged ``name`` at or before ``step`` (NaN if none)."""
        value = math.nan
        for s, _, scalars in self.points:
            if s > step:
                break
            value = scalars.get(name, value)
        return value

    def first_reaching(self, name: str, threshold: float) -> tuple[int, float] | None:
        """``(step, seconds)`` of the first record with ``name >= threshold``."""
        for s, t, scalars in self.points:
            if scalars.get(name, -math.inf) >= threshold:
                return s, t
        return None


def run(config: TrainConfig) -> tuple[Any, Curve, float]:
    curve = Curve()
    start = time.perf_counter()
    result = train(config, callbacks=[curve])
    return result, curve, time.perf_counter() - start


def spread_config(algo: str, steps: int, seed: int) -> TrainConfig:
    common = dict(
        env=SPREAD, env_kwargs={"max_cycles": 25}, total_steps=steps, seed=seed, log_interval=5.0, stats_window=300
    )
    if algo == "mappo":
        return mappo_config(**common)
    return TrainConfig(**{**MAPPO_DEFAULTS, "algo": "ppo", "value_norm": "running", **common})


def fmt(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


# ------------------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2_400_000, help="agent steps for IPPO and for MAPPO each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=200, help="env episodes per evaluation")
    parser.add_argument("--eval-seed", type=int, default=10_000)
    parser.add_argument("--kaz-steps", type=int, default=400_000, help="0 skips knights_archers_zombies")
    parser.add_argument("--tag-steps", type=int, default=300_000, help="0 skips simple_tag")
    parser.add_argument("--json", action="store_true", help="also print one JSON line of every figure")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out: dict[str, Any] = {}
    wall = time.perf_counter()

    # ---- simple_spread: random, heuristic, IPPO, MAPPO ---------------------------------------------------------
    env_fn = resolve_env(SPREAD, {"max_cycles": 25})
    agents = 3
    episodes = args.eval_episodes * agents  # evaluate() counts agent-episodes

    def evaluation(policy: nn.Module, deterministic: bool) -> float:
        return evaluate(policy, env_fn, episodes, seed=args.eval_seed, num_envs=8, deterministic=deterministic)[
            "mean_return"
        ]

    rows: list[dict[str, Any]] = []
    for name, rule in (("random", random_rule), ("heuristic", heuristic_rule)):
        start = time.perf_counter()
        value = evaluation(ScriptedPolicy(rule, agents, args.seed), True)
        rows.append(
            {
                "method": name,
                "steps": 0,
                "minutes": (time.perf_counter() - start) / 60,
                "greedy": value,
                "sampled": value,
                "train": math.nan,
                "reached": None,
            }
        )
    heuristic = rows[1]["greedy"]
    curves: dict[str, Curve] = {}
    for name, algo in (("IPPO", "ppo"), ("MAPPO", "mappo")):
        result, curve, seconds = run(spread_config(algo, args.steps, args.seed))
        curves[name] = curve
        rows.append(
            {
                "method": name,
                "steps": result.global_step,
                "minutes": seconds / 60,
                "greedy": evaluation(result.policy, True),
                "sampled": evaluation(result.policy, False),
                "train": result.episode_return,
                "reached": curve.first_reaching("charts/episode_return", heuristic),
            }
        )

    print(
        f"{SPREAD} (3 agents, max_cycles=25): mean per-agent episode return, {args.eval_episodes} evaluation "
        f"episodes on seeds {args.eval_seed}+, seed {args.seed}, {args.steps:,} agent steps per trained method"
    )
    print(
        f"{'method':<10} {'agent steps':>12} {'minutes':>8} {'eval greedy':>12} {'eval sampled':>13} "
        f"{'train (last 300)':>17}   training return first >= heuristic"
    )
    for row in rows:
        reached = row["reached"]
        when = (
            "-"
            if row["method"] in ("random", "heuristic")
            else ("never" if reached is None else f"at {reached[0]:,} steps, {reached[1] / 60:.1f} min")
        )
        print(
            f"{row['method']:<10} {row['steps']:>12,} {row['minutes']:>8.1f} {fmt(row['greedy']):>12} "
            f"{fmt(row['sampled']):>13} {fmt(row['train']):>17}   {when}"
        )
    marks = [args.steps * f for f in (0.25, 0.5, 0.75, 1.0)]
    print("training return (sampled actions, last 300 agent-episodes) at equal steps:")
    print(f"{'steps':>12} " + " ".join(f"{name:>8}" for name in curves))
    for mark in marks:
        print(
            f"{int(mark):>12,} "
            + " ".join(f"{fmt(c.value_at(mark, 'charts/episode_return')):>8}" for c in curves.values())
        )
    out["simple_spread"] = {"rows": [{**r, "reached": r["reached"]} for r in rows]}

    # ---- knights_archers_zombies: agents die mid-episode --------------------------------------------------------
    if args.kaz_steps:
        cfg = mappo_config(
            env=KAZ,
            total_steps=args.kaz_steps,
            seed=args.seed,
            num_envs=8,
            horizon=64,
            minibatch_size=1024,
            log_interval=5.0,
            stats_window=20,
        )
        result, curve, seconds = run(cfg)
        team = [(s, sc["charts/team_return"]) for s, _, sc in curve.points if "charts/team_return" in sc]
        quarter = [curve.value_at(args.kaz_steps * f, "charts/team_return") for f in (0.25, 0.5, 0.75, 1.0)]
        print(
            f"{KAZ}: MAPPO, {result.global_step:,} agent steps in {seconds / 60:.1f} min, "
            f"{result.episodes:,} agent-episodes; mean team return (last 20 env episodes) at 25/50/75/100%: "
            + " / ".join(fmt(q) for q in quarter)
            + f" (first logged {fmt(team[0][1]) if team else '-'})"
        )
        out["kaz"] = {"steps": result.global_step, "minutes": seconds / 60, "team_return": quarter}

    # ---- simple_tag: heterogeneous agents ---------------------------------------------------------------------
    if args.tag_steps:
        cfg = mappo_config(
            env=TAG,
            env_kwargs={"max_cycles": 25},
            total_steps=args.tag_steps,
            seed=args.seed,
            log_interval=5.0,
            stats_window=100,
        )
        result, curve, seconds = run(cfg)
        names = ("teams/adversary/episode_return", "teams/agent/episode_return")
        first = next((sc for _, _, sc in curve.points if all(n in sc for n in names)), {})
        last = curve.points[-1][2]
        print(
            f"{TAG}: MAPPO, 3 predators (obs 16) + 1 prey (obs 14) in one padded layout, {result.global_step:,} "
            f"agent steps in {seconds / 60:.1f} min; team returns first -> last: predators "
            f"{fmt(first.get(names[0], math.nan))} -> {fmt(last.get(names[0], math.nan))}, prey "
            f"{fmt(first.get(names[1], math.nan))} -> {fmt(last.get(names[1], math.nan))}"
        )
        out["simple_tag"] = {"first": {n: first.get(n) for n in names}, "last": {n: last.get(n) for n in names}}

    print(f"total {(time.perf_counter() - wall) / 60:.1f} min")
    if args.json:
        print(json.dumps(out, default=lambda x: None if isinstance(x, float) and math.isnan(x) else str(x)))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
