"""PPO in one file on shoal's emulation and vector env, using the public API only.

    python examples/ppo_single_file.py --env-id CartPole-v1 --total-timesteps 100000 --seed 1

The algorithm and its phases are those of `shoal.train` (rollout, GAE with truncated episodes bootstrapped from
their final observation, clipped surrogate and value losses, gradient clipping, learning-rate annealing), written
out top to bottom so that it can be read, and changed, in one sitting. Any Gymnasium id works, and so does a
PettingZoo env constructor: every live agent slot is a row (padded and dead slots are masked out of the loss).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

import shoal.vector
from shoal.policies import Policy


@dataclass
class Args:
    env_id: str = "CartPole-v1"
    """a Gymnasium env id"""
    total_timesteps: int = 100_000
    """agent steps to train for"""
    seed: int = 1
    """seed of the envs, the network and the sampling"""
    num_envs: int = 8
    """parallel envs"""
    backend: str = "serial"
    """shoal vector backend: serial, multiprocessing or ray"""
    num_steps: int = 64
    """steps per env per rollout"""
    learning_rate: float = 4e-3
    """Adam learning rate, annealed linearly to 0"""
    gamma: float = 0.99
    """discount"""
    gae_lambda: float = 0.95
    """GAE lambda"""
    num_minibatches: int = 4
    """minibatches per epoch"""
    update_epochs: int = 3
    """passes over each rollout"""
    clip_coef: float = 0.2
    """ratio (and value) clip range"""
    ent_coef: float = 0.0
    """entropy bonus"""
    vf_coef: float = 0.5
    """value loss weight"""
    max_grad_norm: float = 0.5
    """global gradient-norm clip"""
    hidden_size: int = 64
    """width of the policy trunk"""


def parse_args() -> Args:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in vars(Args()).items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(default), default=default)
    return Args(**vars(parser.parse_args()))


def train(args: Args) -> tuple[Policy, list[float]]:
    """Train and return the policy and the returns of every finished training episode, in order."""
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(1)  # small networks run fastest on one thread
    envs = shoal.vector.make(lambda: gym.make(args.env_id), args.num_envs, backend=args.backend, seed=args.seed)
    rows = envs.num_agents  # num_envs * agent slots per env
    policy = Policy.from_env(envs, hidden_size=args.hidden_size)
    optimizer = torch.optim.Adam(policy.parameters(), lr=args.learning_rate, eps=1e-5)

    # Storage for one rollout: [num_steps, rows, ...]
    obs = torch.zeros((args.num_steps, rows, *envs.single_observation_space.shape),
                      dtype=torch.from_numpy(np.zeros(0, envs.single_observation_space.dtype)).dtype)
    actions = torch.zeros((args.num_steps, rows, *envs.single_action_space.shape),
                          dtype=torch.from_numpy(np.zeros(0, envs.single_action_space.dtype)).dtype)
    logprobs = torch.zeros((args.num_steps, rows))
    rewards = torch.zeros((args.num_steps, rows))
    dones = torch.zeros((args.num_steps, rows))
    values = torch.zeros((args.num_steps, rows))
    live = torch.zeros((args.num_steps, rows), dtype=torch.bool)

    batch_size = args.num_steps * rows
    num_updates = max(1, args.total_timesteps // batch_size)
    episode_returns: list[float] = []
    start = time.time()
    next_obs = torch.from_numpy(envs.reset(seed=args.seed)[0].copy())
    next_live = torch.from_numpy(envs.masks.copy())

    for update in range(1, num_updates + 1):
        optimizer.param_groups[0]["lr"] = (1.0 - (update - 1.0) / num_updates) * args.learning_rate

        # Rollout: act, step, and bootstrap truncated episodes from the value of their final observation.
        for step in range(args.num_steps):
            obs[step], live[step] = next_obs, next_live
            with torch.no_grad():
                out = policy(next_obs)
            actions[step], logprobs[step], values[step] = out.action, out.log_prob, out.value
            continuous = envs.action_layout.kind in ("continuous", "hybrid")
            sent = policy.clip_action(out.action) if continuous else out.action
            next_np, reward, terminal, truncated, infos = envs.step(sent.numpy())
            reward = torch.from_numpy(reward.astype(np.float32))
            for i in np.flatnonzero(truncated & ~terminal):
                final = torch.from_numpy(np.asarray(infos[i]["final_observation"]))[None]
                with torch.no_grad():
                    reward[i] += args.gamma * policy.value(final)[0]
            for i in np.flatnonzero(terminal | truncated):
                if "episode" in infos[i]:
                    episode_returns.append(float(infos[i]["episode"]["return"]))
            rewards[step] = reward
            dones[step] = torch.from_numpy((terminal | truncated).astype(np.float32))
            next_obs, next_live = torch.from_numpy(next_np.copy()), torch.from_numpy(envs.masks.copy())

        # Advantages: GAE over the rollout, cut at episode ends.
        with torch.no_grad():
            next_value = policy.value(next_obs)
            advantages = torch.zeros_like(rewards)
            last = torch.zeros(rows)
            for t in reversed(range(args.num_steps)):
                following = next_value if t == args.num_steps - 1 else values[t + 1]
                keep = 1.0 - dones[t]
                delta = rewards[t] + args.gamma * following * keep - values[t]
                last = delta + args.gamma * args.gae_lambda * keep * last
                advantages[t] = last
            returns = advantages + values

        # Flatten the rollout; only live slots are learned from.
        keep = live.reshape(-1)
        b_obs = obs.reshape(-1, *obs.shape[2:])[keep]
        b_actions = actions.reshape(-1, *actions.shape[2:])[keep]
        b_logprobs, b_values = logprobs.reshape(-1)[keep], values.reshape(-1)[keep]
        b_advantages, b_returns = advantages.reshape(-1)[keep], returns.reshape(-1)[keep]

        # Learn: epochs of shuffled minibatches, clipped surrogate and clipped value loss.
        count = len(b_obs)
        minibatch_size = max(1, count // args.num_minibatches)
        for _epoch in range(args.update_epochs):
            order = torch.randperm(count)
            for begin in range(0, count, minibatch_size):
                mb = order[begin:begin + minibatch_size]
                out = policy(b_obs[mb], action=b_actions[mb])
                logratio = out.log_prob - b_logprobs[mb]
                ratio = logratio.exp()
                mb_adv = b_advantages[mb]
                mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                pg_loss = torch.max(-mb_adv * ratio,
                                    -mb_adv * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)).mean()
                v_clipped = b_values[mb] + torch.clamp(out.value - b_values[mb], -args.clip_coef, args.clip_coef)
                v_loss = 0.5 * torch.max((out.value - b_returns[mb]) ** 2, (v_clipped - b_returns[mb]) ** 2).mean()
                loss = pg_loss - args.ent_coef * out.entropy.mean() + args.vf_coef * v_loss
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), args.max_grad_norm)
                optimizer.step()

        recent = np.mean(episode_returns[-20:]) if episode_returns else float("nan")
        steps = update * batch_size
        print(f"update {update}/{num_updates}  steps {steps:,}  return {recent:.1f}  "
              f"sps {steps / (time.time() - start):,.0f}", flush=True)
    envs.close()
    return policy, episode_returns


if __name__ == "__main__":
    train(parse_args())
