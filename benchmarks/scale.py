"""Scaling on this machine: 1 vs 2 learner processes (torch.distributed, gloo), Multiprocessing vs Ray rollouts.

Two comparisons, printed side by side (agent-steps/s; higher is better):

* **learners**: PPO on CartPole-v1, each learner with its own ``--num-envs`` serial envs; 1 learner is the plain
  trainer in one process, 2 learners are two processes started the way ``torchrun`` starts them, averaging
  gradients with DDP over gloo. Steps/s counts every learner's steps over the training loop's wall time (process
  start-up and env creation excluded).
* **rollouts**: the same ``--rollout-envs`` CartPole-v1 envs on 2 workers, as worker processes
  (``backend="multiprocessing"``) or as Ray actors on a local Ray of 2 CPUs (``backend="ray"``): the vector env
  alone (random actions) and end-to-end PPO training with the learner in this process.

Runs alternate between the configurations and the best of ``--repeats`` is kept, so load from other processes
on the machine hits every configuration alike.

    python benchmarks/scale.py [--steps 60000] [--num-envs 8] [--rollout-envs 32] [--repeats 2] [--skip-ray]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import line, rate
from shoal import vector
from shoal.train import TrainConfig, train
from shoal.vector.multiprocessing import available_cores

ENV_ID = "CartPole-v1"
UNIT = "steps/s"


def cartpole() -> gym.Env:
    return gym.make(ENV_ID)


# ------------------------------------------------------------------------------------------------------------
# learners
# ------------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _learner(rank: int, world: int, port: int, steps: int, num_envs: int, out: str) -> None:
    """One learner process, with the environment torchrun would give it; rank 0 writes the result."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    # preset="none": the general defaults (3 epochs of 4 minibatches), whose all-reduces docs/scaling.md counts
    result = train(TrainConfig(env=ENV_ID, preset="none", num_envs=num_envs, total_steps=steps, seed=1,
                               log_interval=3600, tensorboard=False))
    if rank == 0:
        Path(out).write_text(json.dumps({"sps": result.sps, "steps": result.global_step,
                                         "seconds": result.seconds, "return": result.episode_return}))


def learners_sps(world: int, steps: int, num_envs: int) -> dict[str, Any]:
    """Train with ``world`` learner processes; the result of rank 0 (steps/s over every learner)."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "result.json")
        mp.start_processes(_learner, args=(world, _free_port(), steps, num_envs, out), nprocs=world,
                           start_method="spawn")
        return json.loads(Path(out).read_text())


# ------------------------------------------------------------------------------------------------------------
# rollouts
# ------------------------------------------------------------------------------------------------------------


def vector_rate(backend: str, num_envs: int, seconds: float, repeats: int) -> float:
    """Agent-steps/s of a vector env of ``num_envs`` CartPoles on 2 workers, random actions."""
    with vector.make(cartpole, num_envs, backend=backend, num_workers=2, seed=0) as vecenv:
        vecenv.reset()
        actions = np.random.default_rng(0).integers(0, 2, size=(64, num_envs))
        i = 0

        def step() -> int:
            nonlocal i
            vecenv.step(actions[i % 64])
            i += 1
            return num_envs

        return rate(step, seconds, repeats)


def train_sps(backend: str, num_envs: int, steps: int) -> dict[str, Any]:
    """End-to-end PPO training with ``num_envs`` envs on 2 workers of ``backend``; the learner is here."""
    result = train(TrainConfig(env=ENV_ID, preset="none", num_envs=num_envs, num_workers=2, backend=backend,
                               horizon=32, total_steps=steps, seed=1, log_interval=3600, tensorboard=False))
    return {"sps": result.sps, "steps": result.global_step, "return": result.episode_return}


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return max(runs, key=lambda r: r["sps"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60_000, help="agent steps per training run")
    parser.add_argument("--num-envs", type=int, default=8, help="envs per learner (learner comparison)")
    parser.add_argument("--rollout-envs", type=int, default=32, help="envs on the 2 rollout workers")
    parser.add_argument("--repeats", type=int, default=2, help="runs per configuration (the best is kept)")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per vector-env measurement")
    parser.add_argument("--skip-ray", action="store_true", help="only the learner comparison")
    args = parser.parse_args()

    cores = available_cores()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {cores} cores, load average {load:.1f} at start; agent-steps/s, best of {args.repeats}")
    start = time.perf_counter()

    # ---- learners -----------------------------------------------------------------------------------------
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    for _ in range(args.repeats):
        for world in (1, 2):
            runs[world].append(learners_sps(world, args.steps, args.num_envs))
    one, two = _best(runs[1]), _best(runs[2])
    print(f"== learners: PPO on {ENV_ID}, {args.num_envs} serial envs per learner, {args.steps:,} steps")
    print(line("1 learner process", one["sps"], UNIT))
    print(line("2 learner processes (DDP, gloo)", two["sps"], UNIT, one["sps"], "1 learner"))

    # ---- rollouts -----------------------------------------------------------------------------------------
    if not args.skip_ray:
        from shoal.vector.ray import connect_ray

        connect_ray(num_cpus=2)
        backends = ("multiprocessing", "ray")
        raw: dict[str, float] = {}
        trained: dict[str, list[dict[str, Any]]] = {b: [] for b in backends}
        for _ in range(args.repeats):
            for backend in backends:
                raw[backend] = max(raw.get(backend, 0.0), vector_rate(backend, args.rollout_envs, args.seconds, 1))
                trained[backend].append(train_sps(backend, args.rollout_envs, args.steps))
        mp_train, ray_train = _best(trained["multiprocessing"]), _best(trained["ray"])
        print(f"== rollouts: {args.rollout_envs} {ENV_ID} envs on 2 workers (learner in this process)")
        print(line("vector env, Multiprocessing", raw["multiprocessing"], UNIT))
        print(line("vector env, Ray (local, 2 CPUs)", raw["ray"], UNIT, raw["multiprocessing"], "Multiprocessing"))
        print(line("PPO training, Multiprocessing", mp_train["sps"], UNIT))
        print(line("PPO training, Ray (local, 2 CPUs)", ray_train["sps"], UNIT, mp_train["sps"], "Multiprocessing"))
    print(f"# {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
