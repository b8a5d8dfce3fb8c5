"""Throughput of an env under shoal's vector backends (``shoal bench``): random legal actions, agent-steps/s."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from shoal.errors import APIUsageError

__all__ = ["measure_throughput", "random_actions"]


def random_actions(vecenv: Any, rng: np.random.Generator, rows: int) -> np.ndarray:
    """Uniform random flat actions ``[rows, *flat_action_shape]`` that respect ``vecenv.action_masks``."""
    layout = vecenv.action_layout
    masks = getattr(vecenv, "action_masks", None)
    if layout.kind == "discrete":
        if masks is None:
            return rng.integers(0, layout.flat_space.n, rows)
        scores = rng.random(masks.shape) * masks  # the legal action with the highest score wins
        return np.where(masks.any(axis=1), scores.argmax(axis=1), 0).astype(np.int64)
    if layout.kind == "multi_discrete":
        return (rng.random((rows, layout.nvec.size)) * layout.nvec).astype(np.int64)
    low = np.nan_to_num(layout.flat_space.low, neginf=-1.0).astype(np.float64)
    high = np.nan_to_num(layout.flat_space.high, posinf=1.0).astype(np.float64)
    actions = rng.uniform(low, high, (rows, *layout.flat_shape))
    if layout.kind == "hybrid":
        actions[:, : layout.num_discrete] = np.floor(rng.random((rows, layout.num_discrete)) * layout.nvec)
    return actions.astype(layout.flat_dtype)


def measure_throughput(env_fn: Callable[[], Any], *, num_envs: int = 8, backend: str = "serial",
                       num_workers: int | None = None, seconds: float = 3.0, seed: int = 0,
                       batch_size: int | None = None) -> dict[str, Any]:
    """Step ``num_envs`` copies of ``env_fn`` with random actions for ``seconds``.

    Args:
        batch_size: envs per batch; below ``num_envs`` the loop is EnvPool-style (``recv`` whichever workers
            finished first, ``send`` their actions) instead of stepping every env each time.

    Returns:
        ``{"agent_steps_per_s", "env_steps_per_s", "steps", "seconds", "num_envs", "backend", "num_workers",
        "batch_size"}``: agent steps count live (masked-in) agent rows only.
    """
    from shoal.vector import make

    if seconds <= 0:
        raise APIUsageError(f"seconds={seconds} must be positive")
    rng = np.random.default_rng(seed)
    with make(env_fn, num_envs, backend=backend, num_workers=num_workers, batch_size=batch_size,
              seed=seed) as vecenv:
        vecenv.async_reset(seed=seed)
        agent_steps = env_steps = 0
        start = time.perf_counter()
        batch = vecenv.recv()
        while time.perf_counter() - start < seconds:
            vecenv.send(random_actions(vecenv, rng, len(batch.masks)))
            batch = vecenv.recv()
            agent_steps += int(batch.masks.sum())
            env_steps += len(batch.env_ids)
        elapsed = time.perf_counter() - start
        batch_size = vecenv.batch_size
    return {"agent_steps_per_s": agent_steps / elapsed, "env_steps_per_s": env_steps / elapsed,
            "steps": agent_steps, "seconds": elapsed, "num_envs": num_envs, "backend": backend,
            "num_workers": num_workers, "batch_size": batch_size}
