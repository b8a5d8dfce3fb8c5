"""PPO on CartPole-v1: shoal's trainer beside a CleanRL-style PPO loop, same network and hyperparameters.

Targets (2 CPU cores): shoal reaches a mean return >= 475 over 100 evaluation episodes within 150k steps and
90 s, and its end-to-end training steps/s is >= 2x the CleanRL-style loop's. shoal runs with its learner process
(``async_learner=True``: updates on the second core while the next rollout is collected; the first half of each
rollout is acted by the weights one update older); the one-process trainer is measured too, for reference.

The CleanRL-style loop is CleanRL's ``ppo.py`` as reimplemented in ``benchmarks/reference/cleanrl_ppo.py``
(Gymnasium ``SyncVectorEnv`` with same-step autoreset and ``RecordEpisodeStatistics``,
``torch.distributions.Categorical``, GAE loop, shuffled minibatches, clipped value loss), with three differences
that keep the comparison about the loops only: its network is the very same module as shoal's policy (same
layers, same initialization seed), its hyperparameters are read from the same :class:`~shoal.train.TrainConfig`,
and its TensorBoard scalars and printed lines are off.

    python benchmarks/train.py [--total-steps 150000] [--seed 1] [--cleanrl-steps 150000] [--skip-cleanrl]
                                [--more-seeds 2,3,4,5]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions.categorical import Categorical

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import line
from benchmarks.reference import cleanrl_ppo as cleanrl_reference
from shoal.policies import Policy
from shoal.train import TrainConfig, evaluate, train

ENV_ID = "CartPole-v1"


# ------------------------------------------------------------------------------------------------------------
# --
# CleanRL-style PPO (https://github.com/vwxyzjn/cleanrl/blob/master/cleanrl/ppo.py), same network and config
# ------------------------------------------------------------------------------------------------------------
# --


class CleanRLAgent(nn.Module):
    """CleanRL's ``Agent`` interface over shoal's policy network (so both loops train the same network)."""

    def __init__(self, net: Policy) -> None:
        super().__init__()
        self.net = net

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.value_head(self.net.encode_critic(x)).squeeze(-1)

    def get_action_and_value(
        self, x: torch.Tensor, action: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = self.net.encode(x)
        logits = self.net.head.logits(hidden)
        probs = Categorical(logits=logits)
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.net.value_head(self.net.encode_critic(x))


def cleanrl_ppo(cfg: TrainConfig, total_steps: int) -> dict[str, float]:
    """Train with CleanRL's loop (``benchmarks/reference/cleanrl_ppo.py``, its logging off) on shoal's network and
    ``cfg``'s hyperparameters; returns steps/s and the mean of the last 100 training episodes."""
    batch_size = cfg.num_envs * cfg.horizon
    # CleanRL clips the value update with clip_coef and splits the batch into equal minibatches: refuse a config
    # the reference loop would silently train differently
    if cfg.clip_vloss and cfg.vf_clip_coef != cfg.clip_coef:
        raise SystemExit(f"vf_clip_coef={cfg.vf_clip_coef} != clip_coef={cfg.clip_coef}: CleanRL's loop clips the "
                         "value update with clip_coef")
    if batch_size % cfg.minibatch_size:
        raise SystemExit(f"minibatch_size={cfg.minibatch_size} does not divide the batch of {batch_size}: CleanRL's "
                         "loop trains batch_size // num_minibatches-sized minibatches")
    args = cleanrl_reference.parse_args([
        "--env-id", ENV_ID, "--seed", str(cfg.seed), "--cuda", "false", "--total-timesteps", str(total_steps),
        "--learning-rate", str(cfg.learning_rate), "--num-envs", str(cfg.num_envs), "--num-steps", str(cfg.horizon),
        "--anneal-lr", str(cfg.anneal_lr), "--gamma", str(cfg.gamma), "--gae-lambda", str(cfg.gae_lambda),
        "--num-minibatches", str(batch_size // cfg.minibatch_size), "--update-epochs", str(cfg.update_epochs),
        "--norm-adv", str(cfg.norm_adv), "--clip-coef", str(cfg.clip_coef), "--clip-vloss", str(cfg.clip_vloss),
        "--ent-coef", str(cfg.ent_coef), "--vf-coef", str(cfg.vf_coef), "--max-grad-norm", str(cfg.max_grad_norm),
        *(["--target-kl", str(cfg.target_kl)] if cfg.target_kl is not None else []),
    ])

    def agent(envs: gym.vector.VectorEnv) -> CleanRLAgent:
        return CleanRLAgent(Policy(envs.single_observation_space, envs.single_action_space,
                                   hidden_size=cfg.hidden_size))

    result = cleanrl_reference.run(args, agent_fn=agent, verbose=False)
    tail = result["episode_returns"][-100:]
    return {
        "sps": result["sps"],
        "seconds": result["seconds"],
        "steps": result["steps"],
        "train_return": float(np.mean(tail)) if tail else float("nan"),
    }


# ------------------------------------------------------------------------------------------------------------
# --


def shoal_ppo(cfg: TrainConfig) -> dict[str, float]:
    """Train with shoal; report steps/s, the step at which the training mean return first reached 475, and the
    mean return of 100 deterministic evaluation episodes."""
    history: list[tuple[int, float, float]] = []
    result = train(
        cfg,
        callbacks=[
            lambda r: history.append((r.step, r.elapsed, r.scalars.get("charts/episode_return", 0.0)))
        ],
    )
    reached = next(((step, t) for step, t, value in history if value >= 475), (None, None))
    evaluation = evaluate(result.policy, functools.partial(gym.make, ENV_ID), 100, seed=cfg.seed + 1000)
    return {
        "sps": result.sps,
        "seconds": result.seconds,
        "steps": result.global_step,
        "train_return": result.episode_return or float("nan"),
        "eval_return": evaluation["mean_return"],
        "reached_step": reached[0],
        "reached_seconds": reached[1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--total-steps", type=int, default=150_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--cleanrl-steps",
        type=int,
        default=None,
        help="steps for the CleanRL-style loop (default: the same budget)",
    )
    parser.add_argument("--skip-cleanrl", action="store_true")
    parser.add_argument("--async-handover", type=float, default=TrainConfig.async_handover,
                        help="fraction of each rollout acted by the weights one update older (learner process)")
    parser.add_argument("--more-seeds", default="2,3,4,5",
                        help="further seeds to train both shoal configurations with, to show how evenly each "
                             "solves the task (comma-separated; empty: none)")
    parser.add_argument("--json", action="store_true", help="print only one JSON line")
    args = parser.parse_args()

    cfg = TrainConfig(env=ENV_ID, total_steps=args.total_steps, seed=args.seed, log_interval=0.0,
                      async_learner=True, async_handover=args.async_handover).resolved(agents_per_env=1)
    # Both loops run with the trainer's torch thread count (1 is fastest for this network on 2 cores; with 2
    # threads the CleanRL-style loop slows down many times over on a busy 2-core machine, flattering shoal).
    torch.set_num_threads(cfg.torch_threads)
    ours = shoal_ppo(cfg)
    one_process = shoal_ppo(cfg.replace(async_learner=False))
    torch.set_num_threads(cfg.torch_threads)
    theirs = None if args.skip_cleanrl else cleanrl_ppo(cfg, args.cleanrl_steps or args.total_steps)
    if args.json:
        print(json.dumps({"shoal": ours, "shoal_one_process": one_process, "cleanrl_style": theirs}))
        return
    print(
        f"PPO on {ENV_ID}: {cfg.num_envs} envs x horizon {cfg.horizon}, {cfg.update_epochs} epochs, "
        f"minibatch {cfg.minibatch_size}, lr {cfg.learning_rate}, {torch.get_num_threads()} torch "
        f"thread(s), seed {cfg.seed}, learner process handover {cfg.async_handover}"
    )
    print(
        line(
            "shoal PPO steps/s (end to end, learner process)",
            ours["sps"],
            "steps/s",
            theirs["sps"] if theirs else None,
            "CleanRL-style",
        )
    )
    print(
        line(
            "shoal PPO steps/s (end to end, one process)",
            one_process["sps"],
            "steps/s",
            theirs["sps"] if theirs else None,
            "CleanRL-style",
        )
    )
    if theirs:
        print(line("CleanRL-style PPO steps/s (end to end)", theirs["sps"], "steps/s"))
    reached = (
        f"{ours['reached_step']:,} steps / {ours['reached_seconds']:.1f} s"
        if ours["reached_step"]
        else "not within the budget"
    )
    print(
        f"shoal: {ours['steps']:,} steps in {ours['seconds']:.1f} s; mean return over 100 evaluation "
        f"episodes {ours['eval_return']:.1f}; last-100 training episodes {ours['train_return']:.1f} "
        f"(>= 475 at {reached})"
    )
    print(
        f"shoal, one process: {one_process['steps']:,} steps in {one_process['seconds']:.1f} s; mean return over "
        f"100 evaluation episodes {one_process['eval_return']:.1f}"
    )
    if theirs:
        print(
            f"CleanRL-style: {theirs['steps']:,} steps in {theirs['seconds']:.1f} s; last-100 training "
            f"episodes {theirs['train_return']:.1f}"
        )
    seeds = [int(x) for x in args.more_seeds.split(",") if x.strip()]
    budget = 150_000 + cfg.num_envs * cfg.horizon  # the last rollout may finish past the budget
    for name, run, base in (("learner process", ours, cfg), ("one process", one_process,
                                                              cfg.replace(async_learner=False))):
        runs = [run] + [shoal_ppo(base.replace(seed=seed)) for seed in seeds]
        solved = [r["eval_return"] >= 475 and r["seconds"] <= 90 and r["steps"] <= budget for r in runs]
        speed = f"{run['sps'] / theirs['sps']:.2f}x CleanRL-style" if theirs else "no CleanRL-style run"
        returns = ", ".join(f"{r['eval_return']:.0f}" for r in runs)
        print(f"target eval >= 475 within 150k steps and 90 s, shoal {name}: {sum(solved)}/{len(runs)} seeds "
              f"({returns}); target >= 2x steps/s: "
              f"{'met' if theirs is None or run['sps'] >= 2 * theirs['sps'] else 'NOT met'} ({speed})")


if __name__ == "__main__":
    main()
