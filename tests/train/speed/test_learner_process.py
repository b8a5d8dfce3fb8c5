"""The learner process: the same update as in-process PPO, one update of policy lag, errors that surface."""

from __future__ import annotations

import copy
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from shoal.errors import APIUsageError, WorkerError
from shoal.train import TrainConfig, Trainer, train
from shoal.train.api import make_trainer
from shoal.train.core.ppo import make_optimizer, ppo_update
from shoal.train.speed.learner_process import LearnerProcess


def small(**overrides: Any) -> TrainConfig:
    base: dict[str, Any] = dict(env="CartPole-v1", total_steps=64 * 8, num_envs=4, horizon=16, minibatch_size=32,
                                update_epochs=2, seed=3, log_interval=0.0, tensorboard=False)
    base.update(overrides)
    return TrainConfig(**base)


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def reference_update(policy: torch.nn.Module, optimizer: torch.optim.Optimizer, data: Any, cfg: TrainConfig,
                     generator: torch.Generator, lr: float, progress: float) -> dict[str, float]:
    for group in optimizer.param_groups:
        group["lr"] = lr
    policy.train()
    return ppo_update(policy, optimizer, data.to_torch("cpu"), cfg, generator, progress=progress)


def test_acting_lags_one_update_behind_an_in_process_reference() -> None:
    """Handover at the end: rollout k is acted by the weights after k - 1 updates; each update equals ppo_update
    run in-process."""
    cfg = small(async_learner=True, async_handover=1.0)
    trainer = Trainer(cfg)
    try:
        ref_policy = copy.deepcopy(trainer.policy)
        ref_optimizer = make_optimizer(ref_policy, cfg)
        ref_generator = torch.Generator().manual_seed(0)
        ref_generator.set_state(trainer.generator.get_state())
        trainer._start_learner()
        learner_weights = [copy.deepcopy(ref_policy.state_dict())]  # L_0, L_1, ...
        previous: dict[str, float] = {}
        for k in range(4):
            acting = {n: v.clone() for n, v in trainer.policy.state_dict().items()}
            assert same_weights(acting, learner_weights[max(k - 1, 0)]), f"rollout {k} acted by the wrong weights"
            trainer.collect()
            data, lr = trainer.buffer.data(), trainer.learning_rate()
            progress = trainer.global_step / cfg.total_steps
            expected = reference_update(ref_policy, ref_optimizer, data, cfg, ref_generator, lr, progress)
            learner_weights.append(copy.deepcopy(ref_policy.state_dict()))
            stats = trainer.learn()
            assert {k: v for k, v in stats.items() if k != "learning_rate"} == previous  # the previous update's
            assert trainer.learner is not None
            assert trainer.learner.result() == expected
            previous = expected
        assert same_weights(trainer.learner.state_dict()["model"], learner_weights[-1])
    finally:
        trainer.close()


@pytest.mark.parametrize(
    "overrides",
    [{}, {"env": "memory", "recurrent": True}, {"env": "squad", "algo": "mappo"},
     {"env": "squad", "value_norm": "popart"}, {"obs_norm": True}],
    ids=["cartpole", "memory-lstm", "squad-mappo", "squad-ippo-popart", "cartpole-obs-norm"],
)
def test_handover_at_the_start_is_the_one_process_computation(overrides: dict[str, Any]) -> None:
    """Handover 0: no overlap, so the learner process computes exactly the one-process run (MAPPO included: the
    value normalizer's statistics travel with the weights, and so do running observation statistics)."""
    one_process = make_trainer(small(**overrides))  # each seeds the global RNGs: build and run in turn
    one_process.train()
    handover_first = make_trainer(small(async_learner=True, async_handover=0.0, **overrides))
    handover_first.train()
    assert type(handover_first).__name__ == ("MAPPOTrainer" if overrides.get("env") == "squad" else "Trainer")
    assert same_weights(one_process.policy.state_dict(), handover_first.policy.state_dict())
    if one_process.value_norm is not None:
        assert same_weights(one_process.value_norm.state_dict(), handover_first.value_norm.state_dict())
        assert float(one_process.value_norm.debias) > 0  # the statistics were updated
    if overrides.get("obs_norm"):
        assert int(handover_first.policy.encoder.leaf_encoders[0].obs_stats.count) > 0


def test_async_runs_are_deterministic_and_end_with_the_learners_weights() -> None:
    first, second = train(small(async_learner=True)), train(small(async_learner=True))
    assert same_weights(first.policy.state_dict(), second.policy.state_dict())
    one_process = train(small())
    assert not same_weights(first.policy.state_dict(), one_process.policy.state_dict())  # the lag changes the run
    assert first.global_step == one_process.global_step and first.updates == one_process.updates


def _learner(cfg: TrainConfig) -> tuple[Trainer, LearnerProcess]:
    trainer = Trainer(cfg)
    learner = LearnerProcess(trainer.policy, None, cfg, "cpu", None, trainer.generator.get_state())
    return trainer, learner


def test_a_spawned_learner_computes_what_a_forked_one_does() -> None:
    """The start method used for CUDA devices (spawn: the policy and shared weights are pickled to the child)."""
    cfg = small()
    trainer = Trainer(cfg)
    learners = [LearnerProcess(trainer.policy, None, cfg, "cpu", None, trainer.generator.get_state(), start_method=m)
                for m in ("fork", "spawn")]
    try:
        trainer.collect()
        data = trainer.buffer.data()
        results = []
        for learner in learners:
            learner.submit(data, 1e-3, 0.0)
            stats = learner.result()
            policy = copy.deepcopy(trainer.policy)
            learner.copy_weights_to(policy)
            results.append((stats, policy.state_dict()))
        assert results[0][0] == results[1][0]
        assert same_weights(results[0][1], results[1][1])
        assert not same_weights(results[0][1], trainer.policy.state_dict())  # the update changed the weights
    finally:
        for learner in learners:
            learner.close()
        trainer.close()


def test_an_exception_in_the_learner_surfaces_with_its_traceback() -> None:
    trainer, learner = _learner(small())
    try:
        trainer.collect()
        data = trainer.buffer.data()
        data.obs = data.obs[:, :, :2]  # the policy expects 4 features
        learner.submit(data, 1e-3, 0.0)
        with pytest.raises(WorkerError, match=r"(?s)learner process raised:.*Traceback.*ppo_update"):
            learner.result()
    finally:
        learner.close()
        trainer.close()


def test_a_killed_learner_is_reported_within_seconds() -> None:
    trainer, learner = _learner(small())
    try:
        trainer.collect()
        os.kill(learner._proc.pid, signal.SIGKILL)
        start = time.monotonic()
        with pytest.raises(WorkerError, match="killed by signal 9"):
            learner.submit(trainer.buffer.data(), 1e-3, 0.0)
            learner.result()
        assert time.monotonic() - start < 10
    finally:
        learner.close()
        trainer.close()


def test_close_stops_the_learner_process() -> None:
    trainer, learner = _learner(small())
    proc = learner._proc
    learner.close()
    learner.close()  # idempotent
    trainer.close()
    assert not proc.is_alive() and proc.exitcode == 0


def test_async_learner_refuses_what_it_does_not_support() -> None:
    with pytest.raises(APIUsageError, match="async_learner=True cannot train a self-play league"):
        small(async_learner=True, league=True, env="pettingzoo.classic.tictactoe_v3").validate()
    with pytest.raises(APIUsageError, match=r"async_handover must be a fraction in \[0, 1\], got 1.5"):
        small(async_learner=True, async_handover=1.5).validate()


def test_several_torch_threads_spawn_the_learner_and_training_completes() -> None:
    """A forked child using OpenMP threads can deadlock on the parent's pool: only one-thread learners fork."""
    trainer, learner = _learner(small(torch_threads=1))
    assert learner.start_method == "fork"
    learner.close()
    trainer.close()
    result = train(small(async_learner=True, torch_threads=2, hidden_size=256))
    assert result.global_step >= 64 * 8


_ORPHAN = """
import sys, time
sys.path.insert(0, {root!r})
from shoal.train import TrainConfig, Trainer
from shoal.train.api import make_trainer
from shoal.train.speed.learner_process import LearnerProcess
cfg = TrainConfig(env="CartPole-v1", num_envs=2, horizon=16, minibatch_size=16, log_interval=0.0,
                  tensorboard=False, backend="multiprocessing", num_workers=2)
trainer = Trainer(cfg)
learner = LearnerProcess(trainer.policy, None, cfg, "cpu", None, trainer.generator.get_state())
print(learner._proc.pid, *[p.pid for p in trainer.vecenv._procs], flush=True)
time.sleep(60)
"""


def test_a_killed_trainer_takes_its_learner_and_env_workers_with_it() -> None:
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parents[3])
    proc = subprocess.Popen([sys.executable, "-c", _ORPHAN.format(root=root)], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(x) for x in proc.stdout.readline().split()]
        assert len(pids) == 3
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in alive if _running(pid)]
    assert not alive, f"processes {alive} outlived their trainer"


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


_INTERRUPTED = """
import sys
sys.path.insert(0, {root!r})
from shoal.train import TrainConfig, train
train(TrainConfig(env="CartPole-v1", total_steps=10_000_000, async_learner=True, log_interval=0.0,
                  tensorboard=False))
"""


def test_ctrl_c_stops_training_and_every_process() -> None:
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parents[3])
    proc = subprocess.Popen([sys.executable, "-c", _INTERRUPTED.format(root=root)], start_new_session=True,
                            stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(4)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends to the whole foreground group
        err = proc.communicate(timeout=20)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "KeyboardInterrupt" in err
    time.sleep(0.5)
    group = [pid for pid in _session(proc.pid) if _running(pid)]
    assert not group, f"processes {group} outlived the interrupted run"


def _session(sid: int) -> list[int]:
    """Pids of the processes in session ``sid`` (from /proc: field 6 of ``stat``)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            pids.append(int(stat.parent.name))
    return pids
