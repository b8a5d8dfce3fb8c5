"""MAPPO vs IPPO on mpe2.simple_spread_v3, beside a random policy and a scripted heuristic; then dying agents
(knights_archers_zombies_v11) and heterogeneous agents (simple_tag_v3).

simple_spread_v3 (3 agents, 3 landmarks, ``max_cycles=25``): every method is evaluated by
:func:`shoal.train.runs.evaluate` on the same env seeds (``--eval-seed``), reporting the mean per-agent episode return:

* ``random``: uniform actions (about -27);
* ``heuristic``: agent ``i`` heads for landmark ``i`` (greedy axis move towards ``landmark - 0.5 * velocity``;
  about -12.5);
* ``IPPO``: parameter-shared PPO (agent ids, value normalization, MAPPO's defaults), local critic;
* ``MAPPO``: the same plus the centralized critic (the env's ``state()``, agent-specific).

Both use ``gamma=0.95`` (25-step episodes) and rollouts of 100 steps per env (MAPPO's simple_spread preset). IPPO and
MAPPO train with the same seed and the same budget of agent steps, side by side in two worker processes (one core each
on a 2-core machine; ``--workers 1`` runs them one after the other), while the main process evaluates the scripted
baselines. For each the table gives the steps and minutes it took, its evaluation return with greedy and with sampled
actions, the return of its last training episodes (sampled), its training curve at equal steps, and when its training
return first reached the heuristic's. Targets: MAPPO reaches the heuristic's return within 30 minutes, and is no worse
than IPPO at equal steps.

Then MAPPO on knights_archers_zombies_v11 (archers and knights die mid-episode): the mean team return (all agents
of an env episode together) over the run; and on simple_tag_v3 (3 predators with 16-dim observations, 1 prey with
14-dim ones, padded into one layout): the per-team returns over the run.

    python benchmarks/mappo.py [--steps 4000000] [--seed 0] [--kaz-steps 600000] [--tag-steps 300000] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shoal.train import TrainConfig, evaluate, train
from shoal.train.config import ALGO_DEFAULTS, ENV_PRESETS
from shoal.train.runs.logger import LogRecord
from shoal.train.runs.resolve import resolve_env

SPREAD = "mpe2.simple_spread_v3"
KAZ = "pettingzoo.butterfly.knights_archers_zombies_v11"
TAG = "mpe2.simple_tag_v3"


# ------------------------------------------------------------------------------------------------------------
# Scripted policies, run through the same evaluate() as the trained ones
# ------------------------------------------------------------------------------------------------------------


class _Out(NamedTuple):
    """The fields of a policy output that :class:`~shoal.train.acting.RowActor` reads (a scripted rule has no
    value, no recurrent state, and its log-probabilities are never trained on)."""

    action: Tensor
    log_prob: Tensor
    value: Tensor | None = None
    state: Any = None


class ScriptedPolicy(nn.Module):
    """A fixed rule behind the :class:`~shoal.policies.Policy` call contract (for :func:`shoal.train.runs.evaluate`).

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
        action = self.rule(obs.float(), agent_ids, self.generator)
        return _Out(action, torch.zeros(action.shape[0]))

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


KEEP = ("charts/episode_return", "charts/team_return", "teams/adversary/episode_return", "teams/agent/episode_return")


def run(config: TrainConfig) -> tuple[Any, Curve, float]:
    """Train ``config``; returns the result, the curve (only the scalars this script reads) and the seconds."""
    curve = Curve()
    start = time.perf_counter()
    result = train(config, callbacks=[curve])
    curve.points = [(s, t, {k: v for k, v in sc.items() if k in KEEP}) for s, t, sc in curve.points]
    return result, curve, time.perf_counter() - start


def spread_config(algo: str, steps: int, seed: int) -> TrainConfig:
    """IPPO (``"ppo"``) or MAPPO on simple_spread. MAPPO: its defaults and its simple_spread preset (``gamma=0.95``:
    the episodes last 25 steps, with 0.99 both learn to spread much later; rollouts of 100 steps per env), as
    ``shoal train mpe2.simple_spread_v3 --algo mappo`` trains. IPPO: the same settings, value normalization, a local
    critic."""
    common = dict(
        env=SPREAD,
        env_kwargs={"max_cycles": 25},
        total_steps=steps,
        seed=seed,
        log_interval=5.0,
        stats_window=300,
    )
    if algo == "mappo":
        return TrainConfig(algo="mappo", **common)
    return TrainConfig(**{**ALGO_DEFAULTS["mappo"], **ENV_PRESETS["mappo"][SPREAD], "algo": "ppo",
                          "value_norm": "running", "critic_residual": False, **common})


def spread_evaluation(policy: nn.Module, args: dict[str, Any], deterministic: bool) -> float:
    """Mean per-agent return over ``eval_episodes`` env episodes on the evaluation seeds."""
    env_fn = resolve_env(SPREAD, {"max_cycles": 25})
    return evaluate(policy, env_fn, args["eval_episodes"], seed=args["eval_seed"], num_envs=8,
                    deterministic=deterministic)["mean_return"]


def job(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """One training job (in a worker process): ``"IPPO"``, ``"MAPPO"``, ``"kaz"`` or ``"tag"``."""
    torch.set_num_threads(1)
    if name in ("IPPO", "MAPPO"):
        result, curve, seconds = run(spread_config("ppo" if name == "IPPO" else "mappo", args["steps"], args["seed"]))
        return {
            "method": name,
            "steps": result.global_step,
            "minutes": seconds / 60,
            "greedy": spread_evaluation(result.policy, args, True),
            "sampled": spread_evaluation(result.policy, args, False),
            "train": result.episode_return,
            "points": curve.points,
        }
    if name == "kaz":
        cfg = TrainConfig(algo="mappo",
            env=KAZ,
            total_steps=args["kaz_steps"],
            seed=args["seed"],
            num_envs=8,
            horizon=64,
            minibatch_size=1024,
            learning_rate=5e-4,
            log_interval=5.0,
            stats_window=50,
        )
    else:
        cfg = TrainConfig(algo="mappo",
            env=TAG,
            env_kwargs={"max_cycles": 25},
            total_steps=args["tag_steps"],
            seed=args["seed"],
            log_interval=5.0,
            stats_window=100,
        )
    result, curve, seconds = run(cfg)
    return {"steps": result.global_step, "minutes": seconds / 60, "episodes": result.episodes, "points": curve.points}


def fmt(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


# ------------------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4_000_000, help="agent steps for IPPO and for MAPPO each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=600, help="env episodes (games) per evaluation")
    parser.add_argument("--eval-seed", type=int, default=10_000)
    parser.add_argument("--kaz-steps", type=int, default=600_000, help="0 skips knights_archers_zombies")
    parser.add_argument("--tag-steps", type=int, default=300_000, help="0 skips simple_tag")
    parser.add_argument("--workers", type=int, default=2, help="training processes (1: one job after the other)")
    parser.add_argument("--json", action="store_true", help="also print one JSON line of every figure")
    args = parser.parse_args()
    torch.set_num_threads(1)
    options = vars(args)
    wall = time.perf_counter()

    # ---- the trained jobs run in a pool: IPPO and MAPPO side by side, then KAZ and simple_tag ------------------
    names = ["IPPO", "MAPPO"] + ["kaz"] * bool(args.kaz_steps) + ["tag"] * bool(args.tag_steps)
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {name: pool.submit(job, name, options) for name in names}
        # ---- meanwhile, the scripted baselines on the evaluation seeds ------------------------------------------
        rows: list[dict[str, Any]] = []
        for name, rule in (("random", random_rule), ("heuristic", heuristic_rule)):
            start = time.perf_counter()
            value = spread_evaluation(ScriptedPolicy(rule, 3, args.seed), options, True)
            rows.append(
                {
                    "method": name,
                    "steps": 0,
                    "minutes": (time.perf_counter() - start) / 60,
                    "greedy": value,
                    "sampled": value,
                    "train": math.nan,
                }
            )
        results = {name: future.result() for name, future in futures.items()}

    # ---- simple_spread table ----------------------------------------------------------------------------------
    heuristic = rows[1]["greedy"]
    how = f"side by side in {args.workers} processes" if args.workers > 1 else "one after the other"
    curves: dict[str, Curve] = {}
    for name in ("IPPO", "MAPPO"):
        curves[name] = curve = Curve()
        curve.points = results[name].pop("points")
        rows.append({**results[name], "reached": curve.first_reaching("charts/episode_return", heuristic)})
    print(
        f"{SPREAD} (3 agents, max_cycles=25): mean per-agent episode return, {args.eval_episodes} evaluation "
        f"episodes on seeds {args.eval_seed}+; IPPO and MAPPO: seed {args.seed}, {args.steps:,} agent steps each, "
        f"trained {how}"
    )
    print(
        f"{'method':<10} {'agent steps':>12} {'minutes':>8} {'eval greedy':>12} {'eval sampled':>13} "
        f"{'train (last 300)':>17}   training return first >= heuristic"
    )
    for row in rows:
        reached = row.get("reached")
        when = (
            "-"
            if row["method"] in ("random", "heuristic")
            else ("never" if reached is None else f"at {reached[0]:,} steps, {reached[1] / 60:.1f} min")
        )
        print(
            f"{row['method']:<10} {row['steps']:>12,} {row['minutes']:>8.1f} {fmt(row['greedy']):>12} "
            f"{fmt(row['sampled']):>13} {fmt(row['train']):>17}   {when}"
        )
    print("training return (sampled actions, last 300 env episodes) at equal steps:")
    print(f"{'steps':>12} " + " ".join(f"{name:>8}" for name in curves))
    for fraction in (0.25, 0.5, 0.75, 1.0):
        mark = args.steps * fraction
        print(
            f"{int(mark):>12,} "
            + " ".join(f"{fmt(c.value_at(mark, 'charts/episode_return')):>8}" for c in curves.values())
        )
    out: dict[str, Any] = {"simple_spread": rows}

    # ---- knights_archers_zombies: agents die mid-episode --------------------------------------------------------
    if "kaz" in results:
        kaz = results["kaz"]
        curve = Curve()
        curve.points = kaz.pop("points")
        team = [sc["charts/team_return"] for _, _, sc in curve.points if "charts/team_return" in sc]
        quarters = [curve.value_at(args.kaz_steps * f, "charts/team_return") for f in (0.25, 0.5, 0.75, 1.0)]
        print(
            f"{KAZ}: MAPPO, {kaz['steps']:,} agent steps in {kaz['minutes']:.1f} min, {kaz['episodes']:,} "
            "env episodes; mean team return (last 50 env episodes): first logged "
            f"{fmt(team[0] if team else None)}, at 25/50/75/100% of the steps " + " / ".join(fmt(q) for q in quarters)
        )
        out["kaz"] = {**kaz, "team_return_first": team[0] if team else None, "team_return_quarters": quarters}

    # ---- simple_tag: heterogeneous agents ---------------------------------------------------------------------
    if "tag" in results:
        tag = results["tag"]
        teams = ("teams/adversary/episode_return", "teams/agent/episode_return")
        points = tag.pop("points")
        first = next((sc for _, _, sc in points if all(n in sc for n in teams)), {})
        last = points[-1][2] if points else {}
        print(
            f"{TAG}: MAPPO, 3 predators (obs 16) + 1 prey (obs 14) in one padded layout, {tag['steps']:,} agent "
            f"steps in {tag['minutes']:.1f} min; team returns first -> last logged: predators "
            f"{fmt(first.get(teams[0]))} -> {fmt(last.get(teams[0]))}, prey {fmt(first.get(teams[1]))} -> "
            f"{fmt(last.get(teams[1]))}"
        )
        out["simple_tag"] = {**tag, "first": {n: first.get(n) for n in teams}, "last": {n: last.get(n) for n in teams}}

    print(f"total {(time.perf_counter() - wall) / 60:.1f} min")
    if args.json:
        print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
