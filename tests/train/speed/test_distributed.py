"""Data-parallel learners: torchrun detection, seeds, the update over the union of batches, 2-process gloo runs.

The 2-process tests start learners with ``torch.multiprocessing`` and exactly the environment ``torchrun`` gives
them (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from shoal.errors import APIUsageError
from shoal.train import TrainConfig, Trainer, train
from shoal.train.api import make_trainer
from shoal.train.core.ppo import make_optimizer, ppo_update
from shoal.train.core.rollout import RolloutTensors
from shoal.train.loop.distributed_trainer import DistributedTrainer
from shoal.train.runs.checkpoint import list_checkpoints, load_checkpoint
from shoal.train.runs.logger import read_scalars
from shoal.train.speed.distributed import (
    ProcessGroupReducer,
    broadcast_parameters,
    env_seed,
    init_distributed,
    is_distributed,
    process_group_backend,
    rank_seed,
    torchrun_env,
)

pytestmark = pytest.mark.timeout(120)

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


# ------------------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_torchrun(rank: int, world: int, port: int) -> None:
    """The environment torchrun gives learner ``rank`` (inside a spawned child)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))


def _spawn(fn: Any, world: int, *args: Any, timeout: float = 100.0) -> None:
    """Run ``fn(rank, world, port, *args)`` in ``world`` fresh processes; fail on an error or after ``timeout``."""
    context = mp.start_processes(fn, args=(world, _free_port(), *args), nprocs=world, join=False,
                                 start_method="spawn")
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for proc in context.processes:
                proc.kill()
            pytest.fail(f"the {world} learners did not finish within {timeout} s")


def _save_and_leave(out: dict[str, Any], path: Path) -> None:
    """Save a learner's results to ``path``, wait for every learner, leave the group and exit quietly."""
    torch.save(out, path)
    dist.barrier()  # no rank tears its connections down while another still uses them
    dist.destroy_process_group()
    _exit_quietly()


def _exit_quietly() -> None:
    """End a learner whose results are saved without the interpreter's teardown: torch's gloo threads can abort
    the process there ("terminate called without an active exception"), which would fail a run that passed."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    """Parameters and buffers (running observation statistics among them)."""
    return [p.detach().clone() for p in [*module.parameters(), *module.buffers()]]


def _collect(**overrides: Any) -> tuple[TrainConfig, tuple[torch.nn.Module, Any], RolloutTensors]:
    """One rollout of a fresh trainer: its config, its (untrained) policy with its value normalizer (MAPPO; or
    None) and the batch as tensors."""
    cfg = TrainConfig(**{**dict(env="CartPole-v1", num_envs=4, horizon=16, update_epochs=3, seed=3,
                                log_interval=60, tensorboard=False), **overrides})
    trainer = make_trainer(cfg)
    try:
        trainer.collect()
        data = trainer.buffer.data().to_torch("cpu")
    finally:
        trainer.close()
    return cfg, (trainer.policy, trainer.value_norm), data


def _segments(data: RolloutTensors, index: slice) -> RolloutTensors:
    """The segments ``index`` of a batch (every ``[S, ...]`` entry sliced along S)."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(data):
        value = getattr(data, field.name)
        if value is None:
            out[field.name] = None
        elif isinstance(value, tuple):
            out[field.name] = tuple(v[index] for v in value)
        else:
            out[field.name] = value[index]
    return RolloutTensors(**out)


# ------------------------------------------------------------------------------------------------------------
# launch, seeds, backends
# ------------------------------------------------------------------------------------------------------------


def test_torchrun_environment_is_detected_and_checked() -> None:
    assert torchrun_env({}) is None and torchrun_env({"RANK": "0"}) is None
    info = torchrun_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (info.rank, info.world_size, info.local_rank) == (3, 4, 1)
    with pytest.raises(APIUsageError, match="integers"):
        torchrun_env({"RANK": "x", "WORLD_SIZE": "2"})
    with pytest.raises(APIUsageError, match="0 <= RANK < WORLD_SIZE"):
        torchrun_env({"RANK": "2", "WORLD_SIZE": "2"})
    assert not is_distributed({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"})
    assert is_distributed({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})


def test_gloo_on_cpu_nccl_on_gpus() -> None:
    assert process_group_backend("cpu") == "gloo"
    assert process_group_backend(torch.device("cuda", 1)) == "nccl"
    assert process_group_backend("mps") == "gloo"


def test_env_seeds_of_learners_never_overlap() -> None:
    seed, num_envs, world = 11, 8, 4
    seeds = [env_seed(seed, rank, num_envs) + i for rank in range(world) for i in range(num_envs)]
    assert seeds == list(range(seed, seed + world * num_envs))  # the seeds of one vector env of world * num_envs
    assert rank_seed(seed, 0) == seed and len({rank_seed(seed, r) for r in range(world)}) == world


def test_without_torchrun_train_uses_the_plain_trainer(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)
    trainer = make_trainer(TrainConfig(num_envs=2, horizon=8, minibatch_size=16))
    try:
        assert type(trainer) is Trainer and trainer.env_seed == 0
    finally:
        trainer.close()
    with pytest.raises(APIUsageError, match="not launched by torchrun"):
        init_distributed("cpu")


def test_ray_address_needs_the_ray_backend() -> None:
    with pytest.raises(APIUsageError, match="needs backend='ray'"):
        TrainConfig(ray_address="10.0.0.1:6379").validate()
    TrainConfig(backend="ray", ray_address="10.0.0.1:6379").validate()


# ------------------------------------------------------------------------------------------------------------
# the update
# ------------------------------------------------------------------------------------------------------------


def _update_worker(rank: int, world: int, port: int, work: str) -> None:
    """Learner ``rank``: one update per case on its part of the batch through the process group's reducer;
    saves its parameters and statistics."""
    _as_torchrun(rank, world, port)
    torch.set_num_threads(1)
    context = init_distributed("cpu", timeout=60)
    assert (context.rank, context.world_size, context.backend) == (rank, world, "gloo")
    cases = torch.load(Path(work) / "cases.pt", weights_only=False)
    out = {}
    for name, case in cases.items():
        policy, value_norm = copy.deepcopy(case["start"])
        if rank == 1 and case.get("perturb"):  # different starting weights: the update must not sync them
            with torch.no_grad():
                for param in policy.parameters():
                    param.add_(0.1)
        generator = torch.Generator().manual_seed(case.get("seed", rank))
        stats = ppo_update(policy, make_optimizer(policy, TrainConfig(learning_rate=1e-3)), case["parts"][rank],
                           case["config"], generator, value_norm=value_norm, reducer=ProcessGroupReducer())
        out[name] = {"params": _params(policy), "stats": stats}
    _save_and_leave(out, Path(work) / f"rank{rank}.pt")


def test_two_gloo_learners_take_the_mean_gradient(tmp_path: Path) -> None:
    """The real all-reduce path with 2 learners: each step takes the mean of both learners' gradients.

    * ``same``: both learners hold the same batch and shuffle it alike, so the mean gradient is each one's own:
      exactly the single-process update, minibatches and advantage normalization included.
    * ``halves`` / ``unequal`` (16 and 48 transitions) / ``lstm``: each learner holds part of a batch, one
      minibatch per epoch and no advantage normalization: the mean of the parts' gradients weighted by their
      transitions is the whole batch's gradient, so the result equals one learner on the whole batch (up to
      float summation order).
    * ``obs_norm``: as ``unequal``, and the running observation statistics take in both learners' rows.
    * ``mappo``: uneven live transitions of a game with dying agents, value normalization over both learners'
      targets: both learners end with the same weights and statistics.
    """
    cases: dict[str, Any] = {}
    references: dict[str, Any] = {}
    for name, cut, overrides in [("halves", 2, {}), ("unequal", 1, {}),
                                 ("lstm", 2, {"env": "memory", "recurrent": True}),
                                 ("obs_norm", 1, {"obs_norm": True})]:
        cfg, start, data = _collect(minibatch_size=64, norm_adv=False, **overrides)
        parts = [_segments(data, slice(0, cut)), _segments(data, slice(cut, None))]
        whole = cfg.replace(minibatch_size=10_000)
        reference, value_norm = copy.deepcopy(start)
        stats = ppo_update(reference, make_optimizer(reference, TrainConfig(learning_rate=1e-3)), data, whole,
                           torch.Generator().manual_seed(0), value_norm=value_norm)
        references[name] = {"params": _params(reference), "stats": stats, "exact": False}
        cases[name] = {"start": start, "parts": parts, "config": cfg.replace(minibatch_size=5_000)}
    cfg, start, data = _collect(minibatch_size=16)
    reference, _ = copy.deepcopy(start)
    stats = ppo_update(reference, make_optimizer(reference, TrainConfig(learning_rate=1e-3)), data, cfg,
                       torch.Generator().manual_seed(0))
    references["same"] = {"params": _params(reference), "stats": stats, "exact": True}
    cases["same"] = {"start": start, "parts": [data, data], "config": cfg, "seed": 0}
    cfg, start, data = _collect(env="squad", algo="mappo", minibatch_size=32)
    cases["mappo"] = {"start": start, "parts": [_segments(data, slice(0, 7)), _segments(data, slice(7, None))],
                      "config": cfg}
    torch.save(cases, tmp_path / "cases.pt")

    _spawn(_update_worker, 2, str(tmp_path))

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for name in cases:
        first, second = ranks[0][name], ranks[1][name]
        assert all(torch.equal(a, b) for a, b in zip(first["params"], second["params"], strict=True)), name
        assert first["stats"] == second["stats"], name
        untrained = _params(cases[name]["start"][0])
        assert any(not torch.equal(a, b) for a, b in zip(first["params"], untrained, strict=True)), name
    for name, reference in references.items():
        got = ranks[0][name]
        for expected, param in zip(reference["params"], got["params"], strict=True):
            if reference["exact"]:
                assert torch.equal(param, expected), name
            else:
                torch.testing.assert_close(param, expected, rtol=1e-4, atol=1e-5, msg=name)
        assert got["stats"]["minibatches"] == reference["stats"]["minibatches"], name
        # the learners' losses are averaged unweighted, so the loss statistics match only for equal parts
        keys = ("grad_norm", "explained_variance", "advantage_mean") + (
            ("policy_loss", "value_loss", "entropy") if name not in ("unequal", "obs_norm") else ())
        for key in keys:
            assert got["stats"][key] == pytest.approx(reference["stats"][key], rel=1e-3, abs=1e-6), (name, key)


def _reduce_worker(rank: int, world: int, port: int, work: str) -> None:
    """Learner ``rank``: the reducer's collectives on rank-dependent inputs; saves what it got."""
    _as_torchrun(rank, world, port)
    torch.set_num_threads(1)
    init_distributed("cpu", timeout=60)
    reducer = ProcessGroupReducer()
    layer = torch.nn.Linear(2, 1)
    with torch.no_grad():
        layer.weight.fill_(float(rank))
    broadcast_parameters(layer)
    layer.weight.grad = torch.full((1, 2), float(rank + 1))
    layer.bias.grad = None if rank == 0 else torch.full((1,), 4.0)  # a gradient the loss missed on rank 0
    reducer.gradients([layer.weight, layer.bias], torch.tensor(1.0 + 2 * rank))  # 1 and 3 transitions
    grads = (layer.weight.grad.clone(), layer.bias.grad.clone())
    layer.weight.grad = torch.full((1, 2), float("nan") if rank == 0 else 5.0)  # rank 0: an empty minibatch
    reducer.gradients([layer.weight], torch.tensor(0.0 if rank == 0 else 2.0))
    out = {
        "empty": layer.weight.grad.clone(),
        "count": reducer.count(3 if rank == 0 else 6),
        "mean": reducer.mean(torch.tensor([float(rank), 10.0])),
        "gather": reducer.gather(torch.arange(rank + 1, dtype=torch.float32) + 10 * rank),
        "weight": layer.weight.detach().clone(),
        "grads": grads,
    }
    _save_and_leave(out, Path(work) / f"reduce{rank}.pt")


def test_process_group_reducer_collectives(tmp_path: Path) -> None:
    _spawn(_reduce_worker, 2, str(tmp_path))
    for rank in range(2):
        got = torch.load(tmp_path / f"reduce{rank}.pt", weights_only=False)
        assert got["count"] == 3  # the smallest learner's: nobody gets an empty minibatch
        assert torch.equal(got["mean"], torch.tensor([0.5, 10.0]))
        assert torch.equal(got["gather"], torch.tensor([0.0, 10.0, 11.0]))
        assert torch.equal(got["weight"], torch.zeros(1, 2))  # rank 0's weights everywhere
        assert torch.equal(got["grads"][0], torch.full((1, 2), 1.75))  # (1 * 1 + 3 * 2) / 4
        assert torch.equal(got["grads"][1], torch.full((1,), 3.0))  # (1 * 0 + 3 * 4) / 4
        assert torch.equal(got["empty"], torch.full((1, 2), 5.0))


# ------------------------------------------------------------------------------------------------------------
# end to end: train, checkpoints from rank 0, resume on every rank
# ------------------------------------------------------------------------------------------------------------

STEPS_PER_UPDATE = 2 * 2 * 16  # 2 learners x 2 envs x horizon 16


def _config(run_dir: Path, updates: int, **overrides: Any) -> TrainConfig:
    return TrainConfig(env="CartPole-v1", num_envs=2, horizon=16, minibatch_size=16, update_epochs=2, seed=7,
                       total_steps=STEPS_PER_UPDATE * updates, run_dir=str(run_dir), checkpoint_interval=1,
                       keep_checkpoints=2, log_interval=0.0, tensorboard=False, anneal_lr=False, **overrides)


def _train_worker(rank: int, world: int, port: int, root: str) -> None:
    """Learner ``rank``: 4 updates in one go; 2 updates, then resume to 4. Saves what the parent checks."""
    _as_torchrun(rank, world, port)
    base = Path(root)
    out: dict[str, Any] = {}
    trainer = make_trainer(_config(base / "full", 4))
    assert isinstance(trainer, DistributedTrainer) and trainer.rank == rank
    out["env_seed"] = trainer.env_seed
    full = trainer.train()
    part = train(_config(base / "part", 2))  # (a constant learning rate: a shorter run is a prefix of a longer one)
    resumed = train(_config(base / "part", 4, resume=True))
    for name, result in (("full", full), ("part", part), ("resumed", resumed)):
        out[name] = {"params": _params(result.policy), "global_step": result.global_step, "updates": result.updates,
                     "episodes": result.episodes, "episode_return": result.episode_return,
                     "exact_resume": result.exact_resume, "checkpoint": str(result.checkpoint)}
    _save_and_leave(out, base / f"rank{rank}.pt")


def test_two_learners_train_identically_and_resume_exactly(tmp_path: Path) -> None:
    _spawn(_train_worker, 2, str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert [r["env_seed"] for r in ranks] == [7, 9]  # seed + rank * num_envs: envs 7, 8 and 9, 10
    for name, updates in (("full", 4), ("part", 2), ("resumed", 4)):
        first, second = ranks[0][name], ranks[1][name]
        assert all(torch.equal(a, b) for a, b in zip(first["params"], second["params"], strict=True)), name
        assert first["global_step"] == second["global_step"] == STEPS_PER_UPDATE * updates
        assert first["updates"] == second["updates"] == updates
        assert (first["episodes"], first["episode_return"]) == (second["episodes"], second["episode_return"])
        assert first["checkpoint"] == second["checkpoint"]
    # resume works for every rank: the resumed run is the uninterrupted one, bit for bit
    for rank in ranks:
        assert rank["resumed"]["exact_resume"]
        assert all(torch.equal(a, b) for a, b in zip(rank["full"]["params"], rank["resumed"]["params"],
                                                      strict=True))
        assert rank["resumed"]["episodes"] == rank["full"]["episodes"]
    # rank 0 alone wrote the run directory: one checkpoint per update (2 kept), one CSV row per scalar and step
    run_dir = tmp_path / "full"
    assert [p.name for p in list_checkpoints(run_dir)] == ["update_000003.pt", "update_000004.pt"]
    assert json.loads((run_dir / "config.json").read_text())["seed"] == 7
    rows = [(row["step"], row["name"]) for row in read_scalars(run_dir / "scalars.csv")]
    assert len(rows) == len(set(rows)) and ("losses/policy_loss" in {name for _, name in rows})
    payload = load_checkpoint(list_checkpoints(run_dir)[-1])
    part = payload["distributed"]
    assert part["world_size"] == 2 and part["env_seeds"] == [7, 9] and len(part["ranks"]) == 2
    assert not torch.equal(part["ranks"][0]["rng"]["torch"], part["ranks"][1]["rng"]["torch"])
    assert payload["rng"]["python"] == part["ranks"][0]["rng"]["python"]


def _mappo_defaults_worker(rank: int, world: int, port: int, root: str) -> None:
    """Learner ``rank``: a MAPPO run saved with one critic MLP resumes when the caller leaves critic_residual
    unset."""
    _as_torchrun(rank, world, port)
    base = Path(root)

    def config(**overrides: Any) -> TrainConfig:
        fields: dict[str, Any] = dict(algo="mappo", env="squad", env_kwargs={"max_steps": 6}, total_steps=48,
                                      num_envs=2, horizon=8, minibatch_size=24, seed=1, run_dir=str(base),
                                      checkpoint_interval=1, log_interval=0.0, tensorboard=False)
        return TrainConfig(**{**fields, **overrides})

    first = make_trainer(config(critic_residual=False))
    assert isinstance(first, DistributedTrainer)
    first.train()
    resumed = make_trainer(config(total_steps=96, resume=True))
    out = {"critic_residual": resumed.config.critic_residual, "global_step": resumed.train().global_step}
    _save_and_leave(out, base / f"out{rank}.pt")


def test_a_learner_group_keeps_the_critic_design_a_mappo_run_was_saved_with(tmp_path: Path) -> None:
    # the group resolves the config to compare the ranks' settings, but trains with the one given, so MAPPO still
    # sees that critic_residual was left unset (a resolved config would say True and refuse the saved run)
    _spawn(_mappo_defaults_worker, 2, str(tmp_path))
    for rank in range(2):
        out = torch.load(tmp_path / f"out{rank}.pt", weights_only=False)
        assert out["critic_residual"] is False and out["global_step"] >= 96
