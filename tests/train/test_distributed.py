"""Data-parallel learners: torchrun detection, seeds, the update over the union of batches, 2-process gloo runs.

The 2-process tests start learners with ``torch.multiprocessing`` and exactly the environment ``torchrun`` gives
them (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).
"""

from __future__ import annotations

import copy
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from shoal.errors import APIUsageError
from shoal.train import TrainConfig, Trainer, train
from shoal.train.core.ppo import ppo_update
from shoal.train.loop.trainer import _adam
from shoal.train.runs.checkpoint import list_checkpoints, load_checkpoint
from shoal.train.runs.logger import read_scalars
from shoal.train.speed.distributed import (
    DistributedTrainer,
    distributed_ppo_update,
    env_seed,
    init_distributed,
    is_distributed,
    make_trainer,
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


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _collect(**overrides: Any) -> tuple[TrainConfig, tuple[torch.nn.Module, Any], dict[str, Any]]:
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


def _segments(data: dict[str, Any], index: slice) -> dict[str, Any]:
    """The segments ``index`` of a batch (every ``[S, ...]`` entry sliced along S)."""
    out: dict[str, Any] = {}
    for name, value in data.items():
        if value is None:
            out[name] = None
        elif isinstance(value, tuple):
            out[name] = tuple(v[index] for v in value)
        else:
            out[name] = value[index]
    return out


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


@pytest.mark.parametrize(
    "overrides",
    [
        {"minibatch_size": 16},
        {"env": "memory", "recurrent": True, "minibatch_size": 32},
        {"env": "squad", "advantage": "vtrace", "prio_alpha": 0.5, "minibatch_size": 64, "target_kl": 0.5},
        {"env": "squad", "algo": "mappo", "value_norm": "popart", "minibatch_size": 32},
    ],
    ids=["feedforward", "lstm", "squad-vtrace-prio-kl", "squad-mappo-popart"],
)
def test_one_learner_update_is_exactly_ppo_update(overrides: dict[str, Any]) -> None:
    cfg, start, data = _collect(**overrides)
    results = []
    for update in (ppo_update, distributed_ppo_update):
        model, value_norm = copy.deepcopy(start)  # (together: PopArt rescales the policy's critic layer)
        stats = update(model, _adam(model, 1e-3, 1e-5), data, cfg, torch.Generator().manual_seed(5), 0.3,
                       value_norm=value_norm)
        results.append((_params(model), stats))
    (expected, expected_stats), (got, stats) = results
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))
    assert stats == pytest.approx(expected_stats, rel=1e-6, abs=1e-9, nan_ok=True)


def _update_worker(rank: int, world: int, port: int, work: str) -> None:
    """Learner ``rank``: one distributed update per case on its part of the batch; saves its parameters."""
    _as_torchrun(rank, world, port)
    torch.set_num_threads(1)
    context = init_distributed("cpu", timeout=60)
    assert (context.rank, context.world_size, context.backend) == (rank, world, "gloo")
    cases = torch.load(Path(work) / "cases.pt", weights_only=False)
    out = {}
    for name, case in cases.items():
        policy, value_norm = copy.deepcopy(case["start"])
        model = DistributedDataParallel(policy)
        generator = torch.Generator().manual_seed(case.get("seed", rank))
        stats = distributed_ppo_update(model, _adam(policy, 1e-3, 1e-5), case["parts"][rank], case["config"],
                                       generator, value_norm=value_norm)
        out[name] = {"params": _params(policy), "stats": stats}
    torch.save(out, Path(work) / f"rank{rank}.pt")
    dist.barrier()  # no rank tears its connections down while another still uses them
    dist.destroy_process_group()


def test_two_gloo_learners_equal_one_learner_on_the_concatenated_batch(tmp_path: Path) -> None:
    """2 learners x part of a batch == 1 learner x the whole batch: the same parameters after several PPO epochs
    and the same losses, on both ranks. Also with unequal parts (16 vs 48 transitions), for an LSTM, and for
    MAPPO on a game with dying agents (centralized critic, value normalization, uneven live transitions)."""
    cases: dict[str, Any] = {}
    references: dict[str, Any] = {}
    for name, cut, overrides in [
        ("halves", 2, {}),
        ("unequal", 1, {}),
        ("lstm", 2, {"env": "memory", "recurrent": True}),
        ("mappo", 7, {"env": "squad", "algo": "mappo", "minibatch_size": 32}),
    ]:
        cfg, start, data = _collect(**{"minibatch_size": 64, **overrides})
        parts = [_segments(data, slice(0, cut)), _segments(data, slice(cut, None))]
        # one minibatch per epoch: the whole batch for the single learner, each part for the two learners
        whole = cfg.replace(minibatch_size=10_000)
        reference, value_norm = copy.deepcopy(start)
        stats = ppo_update(reference, _adam(reference, 1e-3, 1e-5), data, whole, torch.Generator().manual_seed(0),
                           value_norm=value_norm)
        references[name] = {"params": _params(reference), "stats": stats}
        cases[name] = {"start": start, "parts": parts, "config": cfg.replace(minibatch_size=5_000)}
    assert [int(part["valid"].sum()) for part in cases["unequal"]["parts"]] == [16, 48]
    # several minibatches per epoch: both learners hold the whole batch and shuffle it alike, so each union
    # minibatch is a minibatch of the single learner twice (the same mean loss; no advantage normalization,
    # whose unbiased std would see 2n - 1 instead of n - 1)
    cfg, start, data = _collect(minibatch_size=16, norm_adv=False)
    reference, _ = copy.deepcopy(start)
    stats = ppo_update(reference, _adam(reference, 1e-3, 1e-5), data, cfg, torch.Generator().manual_seed(0))
    references["minibatches"] = {"params": _params(reference), "stats": stats}
    cases["minibatches"] = {"start": start, "parts": [data, data], "config": cfg, "seed": 0}
    torch.save(cases, tmp_path / "cases.pt")

    _spawn(_update_worker, 2, str(tmp_path))

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for name, reference in references.items():
        first, second = ranks[0][name], ranks[1][name]
        assert all(torch.equal(a, b) for a, b in zip(first["params"], second["params"], strict=True)), name
        for expected, got in zip(reference["params"], first["params"], strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5, msg=name)
        untrained = _params(cases[name]["start"][0])
        assert any(not torch.equal(a, b) for a, b in zip(first["params"], untrained, strict=True))
        for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "grad_norm", "explained_variance",
                    "advantage_mean"):
            assert first["stats"][key] == pytest.approx(reference["stats"][key], rel=1e-3, abs=1e-6), (name, key)
            assert second["stats"][key] == pytest.approx(first["stats"][key], rel=1e-9, abs=1e-12), (name, key)
        expected = 12 if name == "minibatches" else 3  # 3 epochs of 4 minibatches, or of the whole batch
        assert first["stats"]["minibatches"] == reference["stats"]["minibatches"] == expected


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
    torch.save(out, base / f"rank{rank}.pt")
    dist.barrier()  # no rank tears its connections down while another still uses them
    dist.destroy_process_group()


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
