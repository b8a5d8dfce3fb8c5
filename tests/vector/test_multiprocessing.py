"""The multiprocessing backend: shared memory, start methods, EnvPool-style batches, cleanup."""

from __future__ import annotations

import functools
import gc
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import shoal.vector
from shoal.errors import WorkerError
from shoal.vector import multiprocessing as mp_backend
from shoal.vector.multiprocessing import default_spin_us, default_worker_spin_us
from tests.vector import envs_for_tests as envs
from tests.vector.helpers import assert_same_rollout, sync_rollout
from tests.vector.procs import child_pids, new_shm, open_fds, shm_files, wait_gone, workers_only

pytestmark = [pytest.mark.timeout(60), pytest.mark.skipif(sys.platform != "linux", reason="uses /proc")]

ROOT = Path(__file__).resolve().parents[2]


def test_batches_are_views_of_shared_memory() -> None:
    with shoal.vector.make(envs.cartpole, 4, backend="multiprocessing", num_workers=2) as vecenv:
        obs, _ = vecenv.reset()
        shared = vecenv._arrays["obs"]
        assert np.shares_memory(obs, shared)
        obs2, *_ = vecenv.step(np.zeros(4, np.int64))
        assert np.shares_memory(obs2, shared)


def test_spawn_context_matches_serial() -> None:
    with shoal.vector.make(envs.nested, 4, backend="serial", seed=1) as vecenv:
        expected = sync_rollout(vecenv, 20)
    with shoal.vector.make(envs.nested, 4, backend="multiprocessing", num_workers=2, seed=1,
                           context="spawn") as vecenv:
        assert vecenv.context == "spawn"
        assert_same_rollout(expected, sync_rollout(vecenv, 20))


def test_async_returns_the_workers_that_finish_first() -> None:
    fast = functools.partial(envs.SlowEnv, delay=0.0, length=1000)
    slow = functools.partial(envs.SlowEnv, delay=0.05, length=1000)
    with shoal.vector.make([fast, fast, slow, slow], 4, backend="multiprocessing", num_workers=4, batch_size=1,
                           seed=0) as vecenv:
        counts = np.zeros(4, int)
        vecenv.async_reset()
        deadline = time.monotonic() + 0.6
        while time.monotonic() < deadline:
            batch = vecenv.recv()
            assert len(batch.env_ids) == 1 and batch.obs.shape == (1, 2)
            env = int(batch.env_ids[0])
            assert batch.obs[0, 1] == env  # the row really is that env's (its seed is 0 + env)
            counts[env] += 1
            vecenv.send(np.ones(1, np.int64))
        assert counts.min() >= 3, counts  # every env is served
        assert counts[:2].min() > 3 * counts[2:].max(), counts  # fast envs are not held back by slow ones


def test_async_batches_cover_every_env_and_infos_keep_numpy() -> None:
    with shoal.vector.make(functools.partial(envs.SlowEnv, length=3), 8, backend="multiprocessing",
                           num_workers=4, batch_size=4, seed=10) as vecenv:
        vecenv.async_reset()
        seen: set[int] = set()
        seeds = {}
        for i in range(20_000):  # until every env came back (the OS decides which workers finish first)
            if i >= 12 and len(seen) == 8:
                break
            batch = vecenv.recv()
            for k, env in enumerate(batch.env_ids.tolist()):
                seen.add(env)
                info = batch.infos[k]
                if "seed" in info:
                    seeds[env] = info["seed"]
                    assert type(info["seed"]) is np.int64
                if "episode" in info:
                    assert isinstance(info["final_observation"], np.ndarray)
                    assert type(info["action"]) is np.int64  # the env's own step info rides along
            vecenv.send(np.full(4, 2, np.int64))
        assert seen == set(range(8))
        assert seeds == {env: 10 + env for env in range(8)}  # distinct seeds, seed + index


def test_oversubscribed_workers_do_not_spin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mp_backend, "available_cores", lambda: 2)
    assert default_spin_us(64) == 0.0 and default_spin_us(2) == 0.0 and default_spin_us(1) == 50.0
    # Workers spin (yielding their core) up to twice as many as cores, then block at once.
    assert default_worker_spin_us(4) == 2000.0 and default_worker_spin_us(5) == 0.0
    with shoal.vector.make(envs.cartpole, 8, backend="multiprocessing", num_workers=8) as vecenv:
        assert vecenv.spin_us == 0.0 and vecenv.worker_spin_us == 0.0
        vecenv.reset()
        for _ in range(20):
            vecenv.step(np.zeros(8, np.int64))


def test_default_workers_follow_the_cores_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    # The default is bounded by the CPU affinity, as the spin defaults are, not by the machine's CPU count.
    monkeypatch.setattr(shoal.vector, "available_cores", lambda: 3)
    with shoal.vector.make(envs.cartpole, 12, backend="multiprocessing") as vecenv:
        assert vecenv.config.num_workers == 3
    with shoal.vector.make(envs.cartpole, 8, backend="multiprocessing") as vecenv:
        assert vecenv.config.num_workers == 2  # the largest divisor of 8 not above 3


@pytest.mark.parametrize("spins", [{"spin_us": 0, "worker_spin_us": 0}, {"spin_us": 300, "worker_spin_us": 5000}])
def test_spinning_or_blocking_gives_the_same_rollout(spins: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    yields = []
    monkeypatch.setattr(mp_backend, "yield_core", lambda: yields.append(1))  # the parent's spin loop
    with shoal.vector.make(envs.cartpole, 4, backend="serial") as vecenv:
        expected = sync_rollout(vecenv, 80)
    with shoal.vector.make(envs.cartpole, 4, backend="multiprocessing", num_workers=2, **spins) as vecenv:
        assert vecenv.worker_spin_us == spins["worker_spin_us"]
        assert_same_rollout(sync_rollout(vecenv, 80), expected)
    assert bool(yields) == bool(spins["spin_us"])  # the parent spun only when asked to


def test_repeated_make_close_leaves_nothing_behind() -> None:
    children, shm = child_pids(), shm_files()
    for context in ("fork", "fork", "forkserver"):
        vecenv = shoal.vector.make(envs.cartpole, 4, backend="multiprocessing", num_workers=2, context=context)
        vecenv.reset()
        vecenv.step(np.zeros(4, np.int64))
        vecenv.close()
    fds = open_fds()
    for _ in range(3):
        with shoal.vector.make(envs.cartpole, 4, backend="multiprocessing", num_workers=2) as vecenv:
            vecenv.reset()
    gc.collect()
    new = workers_only(child_pids() - children)
    assert not new, f"leftover worker processes: {new}"
    assert not new_shm(shm), f"leftover shared memory: {new_shm(shm)}"
    assert open_fds() <= fds


def test_garbage_collected_vecenv_stops_its_workers() -> None:
    vecenv = shoal.vector.make(envs.cartpole, 4, backend="multiprocessing", num_workers=2)
    vecenv.reset()
    pids = {proc.pid for proc in vecenv._procs}
    del vecenv
    gc.collect()
    assert not wait_gone(pids, 5.0)


def test_workers_exit_when_the_parent_is_killed() -> None:
    code = (
        "import os, shoal.vector\n"
        "from tests.vector import envs_for_tests as envs\n"
        "v = shoal.vector.make(envs.cartpole, 4, backend='multiprocessing', num_workers=2)\n"
        "v.reset()\n"
        "print(' '.join(str(p.pid) for p in v._procs), flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    pids = {int(pid) for pid in out.stdout.split()}
    assert len(pids) == 2, out.stderr
    assert not wait_gone(pids, 5.0), "orphaned workers kept running"


def test_timeout_raises_worker_error() -> None:
    slow = functools.partial(envs.SlowEnv, delay=1.0)
    vecenv = shoal.vector.make(slow, 2, backend="multiprocessing", num_workers=2, timeout=0.2)
    vecenv.reset()
    start = time.monotonic()
    with pytest.raises(WorkerError, match="timeout"):
        vecenv.step(np.zeros(2, np.int64))
    assert time.monotonic() - start < 3.0  # the stuck worker is not waited for: 1 s step, 0.2 s timeout
    assert vecenv.closed
