"""Scaling past one process: data-parallel learners with torch.distributed, and rollouts on a Ray cluster.

Data-parallel learners (``torchrun``)
    Every process launched by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``) runs a
    :class:`DistributedTrainer`: its own vector env, its own rollouts, and a copy of the policy that starts from
    rank 0's parameters; each minibatch step takes the mean of the learners' gradients
    (:class:`ProcessGroupReducer`), so all copies stay identical. The process group uses ``nccl`` when the
    learner's device is a GPU and ``gloo`` otherwise. :func:`shoal.train.train` and ``shoal train`` switch to it
    by themselves under ``torchrun``:

        torchrun --nproc-per-node 2 -m shoal train CartPole-v1 --total-steps 300000 --run-dir runs/ddp

    The config is per learner (``num_envs``, ``batch_size`` and ``minibatch_size`` of each process, like a
    per-GPU batch size); ``total_steps`` is the budget of the whole run, counted over every learner. Each learner
    normalizes advantages over its own minibatch and computes its own loss; the step uses the mean gradient, so
    an update of ``W`` learners works like one update with ``W`` times the minibatch (exactly so when the
    learners' minibatches are of equal size and advantage normalization is off).

Seeds
    Learner ``r`` of a run with seed ``s`` and ``num_envs = n`` seeds its envs from ``s + r * n``: env ``i`` of
    learner ``r`` is reset with ``s + r * n + i``, exactly the seed of env ``r * n + i`` of one vector env of
    ``W * n`` envs, so no two envs of a run share a seed. The policy is initialized from ``s`` on every learner
    (and broadcast from rank 0); action sampling and minibatch shuffling of learner ``r > 0`` use
    ``s + r * RANK_SEED_STRIDE`` (rank 0 keeps ``s``, so a one-learner run equals a plain run).

Logging and checkpoints
    Only rank 0 writes the run directory (config, scalars, TensorBoard events, checkpoints) and runs the
    callbacks (the command line's dashboard). Finished episodes, step counts and loss statistics are gathered
    from every learner after each update, so what rank 0 logs describes the whole run. A checkpoint holds the
    shared model and optimizer once plus each rank's own part (RNG states, rollout carry-over, env snapshot);
    on resume rank 0 reads it and broadcasts it, and every rank continues from its own part (exactly, on the
    serial backend, when the number of learners is unchanged).

Ray rollouts
    With ``backend="ray"`` the env workers are Ray actors; :func:`shoal.vector.ray.connect_ray` joins the cluster at
    ``ray_address`` (``ray.init(address=...)``, once) or starts a local Ray, and the actors are spread over the
    cluster's nodes. The learner stays in the calling process.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from shoal.errors import APIUsageError, CheckpointError, ShoalError
from shoal.train.config import TrainConfig
from shoal.train.loop.trainer import Trainer, resolve_device
from shoal.train.runs.checkpoint import checkpoint_path, load_checkpoint
from shoal.train.runs.logger import LogRecord, RunLogger

__all__ = [
    "RANK_SEED_STRIDE",
    "DistContext",
    "DistributedTrainer",
    "TorchrunEnv",
    "distributed_class",
    "ProcessGroupReducer",
    "broadcast_parameters",
    "env_seed",
    "init_distributed",
    "is_distributed",
    "process_group_backend",
    "rank_seed",
    "torchrun_env",
]

log = logging.getLogger(__name__)

#: Offset between the RNG seeds (action sampling, shuffling) of consecutive ranks (a prime, far from env seeds).
RANK_SEED_STRIDE = 1_000_003

Callback = Callable[[LogRecord], None]


# ------------------------------------------------------------------------------------------------------------
# Launch: torchrun's environment, the process group, seeds
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TorchrunEnv:
    """What ``torchrun`` tells each process through its environment.

    Attributes:
        rank: global rank (``RANK``); world_size: number of processes (``WORLD_SIZE``); local_rank: rank on
            this machine (``LOCAL_RANK``), which picks the GPU.
    """

    rank: int
    world_size: int
    local_rank: int


def torchrun_env(environ: Mapping[str, str] | None = None) -> TorchrunEnv | None:
    """The rank, world size and local rank set by ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``).

    Returns None when ``RANK`` or ``WORLD_SIZE`` is unset (not launched by ``torchrun``).

    Raises:
        APIUsageError: the variables are set but malformed or inconsistent.
    """
    environ = os.environ if environ is None else environ
    if "RANK" not in environ or "WORLD_SIZE" not in environ:
        return None
    try:
        rank, world = int(environ["RANK"]), int(environ["WORLD_SIZE"])
        local = int(environ.get("LOCAL_RANK", rank))
    except ValueError as exc:
        raise APIUsageError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers (as torchrun sets them): {exc}") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise APIUsageError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}, "
                            f"LOCAL_RANK={local}; need 0 <= RANK < WORLD_SIZE")
    return TorchrunEnv(rank, world, local)


def is_distributed(environ: Mapping[str, str] | None = None) -> bool:
    """True in a process group of several learners: one already joined, or ``torchrun`` with WORLD_SIZE > 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    info = torchrun_env(environ)
    return info is not None and info.world_size > 1


def process_group_backend(device: torch.device | str) -> str:
    """``"nccl"`` for learners on CUDA devices, ``"gloo"`` otherwise (CPU, MPS)."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def env_seed(seed: int, rank: int, num_envs: int) -> int:
    """Seed of env 0 of learner ``rank`` (env ``i`` gets ``env_seed + i``): ``seed + rank * num_envs``.

    The envs of learner ``r`` get the seeds of envs ``r * num_envs ...`` of one big vector env, so the envs of
    different learners never share a seed.
    """
    return seed + rank * num_envs


def rank_seed(seed: int, rank: int) -> int:
    """Seed of learner ``rank``'s action sampling (torch, numpy, random); its shuffling generator uses ``+ 1``."""
    return seed + rank * RANK_SEED_STRIDE


@dataclass(frozen=True)
class DistContext:
    """This process's place in the process group.

    Attributes:
        rank, world_size, local_rank: as for :class:`TorchrunEnv`.
        backend: ``"gloo"`` or ``"nccl"``.
        created: True when :func:`init_distributed` created the group (it is destroyed at exit).
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str
    created: bool

    @property
    def is_main(self) -> bool:
        """Rank 0: the learner that writes logs and checkpoints."""
        return self.rank == 0


def _destroy_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def init_distributed(device: torch.device | str = "cpu", timeout: float | None = None) -> DistContext:
    """Join the process group described by ``torchrun``'s environment (or describe the one already joined).

    Args:
        device: the learner's device: CUDA gives ``nccl``, anything else ``gloo``.
        timeout: seconds a collective may wait for the other learners (None: torch's default).

    Raises:
        APIUsageError: torch.distributed is unavailable, or no group exists and the process was not launched
            by ``torchrun`` (``RANK``/``WORLD_SIZE`` unset).
    """
    if not dist.is_available():
        raise APIUsageError("this torch build has no torch.distributed; multi-learner training needs it")
    info = torchrun_env()
    if dist.is_initialized():
        local = info.local_rank if info is not None else dist.get_rank()
        return DistContext(dist.get_rank(), dist.get_world_size(), local, dist.get_backend(), created=False)
    if info is None:
        raise APIUsageError("not launched by torchrun: RANK and WORLD_SIZE are unset. Start the learners with "
                            "`torchrun --nproc-per-node N -m shoal train ...` (or init the process group first)")
    backend = process_group_backend(device)
    kwargs: dict[str, Any] = {}
    if timeout is not None:
        kwargs["timeout"] = datetime.timedelta(seconds=timeout)
    dist.init_process_group(backend=backend, init_method="env://", rank=info.rank, world_size=info.world_size,
                            **kwargs)
    atexit.register(_destroy_group)
    log.debug("joined the %s process group as rank %d of %d", backend, info.rank, info.world_size)
    return DistContext(info.rank, info.world_size, info.local_rank, backend, created=True)


def _learner_device(name: str, local_rank: int) -> torch.device:
    """The learner's device; an index-less CUDA device becomes ``cuda:LOCAL_RANK`` (and the current device)."""
    device = resolve_device(name)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        torch.cuda.set_device(device)
    return device


# ---- collectives ---------------------------------------------------------------------------------------------


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _all_sum(tensors: list[Tensor]) -> None:
    """Sum each tensor of ``tensors`` over every learner, in place (nothing for one learner): one all-reduce
    per device and dtype, over the tensors flattened into one buffer."""
    if _world() == 1:
        return
    groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for tensor in tensors:
        groups.setdefault((tensor.device, tensor.dtype), []).append(tensor)
    for group in groups.values():
        flat = torch.cat([tensor.reshape(-1) for tensor in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        for tensor, part in zip(group, flat.split([tensor.numel() for tensor in group]), strict=True):
            tensor.copy_(part.view_as(tensor))


def _all_cat(values: Tensor) -> Tensor:
    """The ``[N_r, ...]`` ``values`` of every learner concatenated in rank order (``[sum of N_r, ...]``, on
    ``values``' device)."""
    return torch.cat([part.to(values.device) for part in _all_gather(values.detach().cpu())])


def _all_gather(obj: Any) -> list[Any]:
    """``obj`` of every learner, in rank order."""
    if _world() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every learner."""
    if _world() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _raise_if_any_failed(error: BaseException | None, what: str) -> None:
    """Collective: re-raise ``error`` here, or raise on every learner if another learner failed ``what``."""
    reports = _all_gather(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    failed = [(rank, text) for rank, text in enumerate(reports) if text is not None]
    if failed:
        rank, text = failed[0]
        raise ShoalError(f"learner {rank} failed {what}: {text}")


# ------------------------------------------------------------------------------------------------------------
# The update's reducer: what the learners agree on
# ------------------------------------------------------------------------------------------------------------


class ProcessGroupReducer:
    """The :class:`~shoal.train.core.ppo.Reducer` of data-parallel learners in the default process group.

    Every learner takes the mean of the learners' minibatch counts (rounded), and each step takes the mean of
    every learner's gradient (one all-reduce per device and dtype), so the copies of the policy stay identical;
    the KL of early stopping and the update's statistics are means over the learners too. With one learner
    every method is the identity.
    """

    def count(self, minibatches: int) -> int:
        world = _world()
        if world == 1:
            return minibatches
        total = torch.tensor([float(minibatches)], dtype=torch.float64)
        _all_sum([total])
        return max(1, round(float(total) / world))

    def gradients(self, params: list[Tensor]) -> None:
        world = _world()
        if world == 1:
            return
        for param in params:  # every learner reduces the same list of gradients
            if param.grad is None:
                param.grad = torch.zeros_like(param)
        grads = [param.grad for param in params]
        _all_sum(grads)
        torch._foreach_div_(grads, float(world))

    def mean(self, values: Tensor) -> Tensor:
        world = _world()
        if world == 1:
            return values
        total = values.detach().clone()
        _all_sum([total])
        return total / world

    def gather(self, values: Tensor) -> Tensor:
        return values if _world() == 1 else _all_cat(values)


def broadcast_parameters(module: nn.Module) -> None:
    """Give every learner rank 0's parameters and buffers (collective; nothing for one learner)."""
    if _world() == 1:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


# ------------------------------------------------------------------------------------------------------------
# The trainer of one learner among several
# ------------------------------------------------------------------------------------------------------------


def _fresh_rng(seed: int) -> dict[str, Any]:
    """RNG states seeded from ``seed``, in the layout of a checkpoint's ``rng`` entry."""
    return {
        "torch": torch.Generator().manual_seed(seed).get_state(),
        "cuda": None,
        "numpy": np.random.RandomState(seed % 2**32).get_state(),
        "python": random.Random(seed).getstate(),
        "generator": torch.Generator().manual_seed(seed + 1).get_state(),
    }


class DistributedTrainer(Trainer):
    """A :class:`~shoal.train.loop.trainer.Trainer` for one of several data-parallel learners (see the module docs).

    Joins the process group (from ``torchrun``'s environment) unless one exists, agrees with the other learners
    on the config (rank 0's ``run_dir`` wins, as its default holds a time stamp; any other difference is an
    error), builds its own vector env seeded from :func:`env_seed`, and starts from rank 0's weights.

    Args:
        config, env_fn, policy: as for :class:`Trainer` (the same on every learner).
        callbacks: run on rank 0 only.
        timeout: seconds a collective waits for the other learners when this call creates the group.
    """

    #: Writing a checkpoint is collective: learners interrupted at different points would wait for each other.
    saves_on_interrupt = False

    def __init__(
        self,
        config: TrainConfig,
        env_fn: Callable[[], Any] | None = None,
        policy: nn.Module | None = None,
        callbacks: Sequence[Callback] = (),
        *,
        timeout: float | None = None,
    ) -> None:
        config = config.resolved()
        if getattr(config, "league", False):
            raise APIUsageError("self-play leagues are not supported with several learners yet; train the league "
                                "with one learner (it can still use --backend multiprocessing or ray)")
        info = torchrun_env()
        local_rank = info.local_rank if info is not None else 0
        self.dist = init_distributed(_learner_device(config.device, local_rank), timeout)
        self.rank = self.dist.rank
        self.world_size = self.dist.world_size
        configs = _all_gather(config.to_dict())
        differing = sorted({k for other in configs for k, v in other.items() if k != "run_dir" and
                            v != configs[0][k]})
        if differing:
            raise APIUsageError(f"the learners were started with different settings of {differing}; give every "
                                "rank the same command line")
        config = config.replace(run_dir=configs[0]["run_dir"])
        error: BaseException | None = None
        try:
            super().__init__(config, env_fn=env_fn, policy=policy, callbacks=callbacks if self.is_main else ())
        except BaseException as exc:  # every learner must learn of it, or the others wait for ever
            error = exc
        _raise_if_any_failed(error, "to set up its trainer")
        if self.rank:  # own action sampling and shuffling (rank 0 keeps the plain run's streams)
            seed = rank_seed(self.config.seed, self.rank)
            self._seed_everything(seed)
            self.generator.manual_seed(seed + 1)
        self._resume_from = _broadcast(self._resume_from)
        self._synced_episodes = 0
        broadcast_parameters(self.policy)  # rank 0's initial weights (and value normalizer) everywhere
        self.reducer = ProcessGroupReducer()

    @property
    def is_main(self) -> bool:
        """Rank 0: writes the run directory and runs the callbacks."""
        return self.rank == 0

    @property
    def env_seed(self) -> int:
        """Seed of this learner's env 0: :func:`env_seed` of the config's seed, the rank and ``num_envs``."""
        return env_seed(self.config.seed, self.rank, self.config.num_envs)

    # ---- learning ------------------------------------------------------------------------------------------

    def _steps_done(self, transitions: int) -> int:
        """Every learner's transitions of this update; finished episodes are shared too."""
        return self._gather_progress(transitions)

    def _gather_progress(self, transitions: int) -> int:
        """Share this update's transitions and finished episodes; returns the transitions of every learner.

        Afterwards every learner holds the same episode statistics: the last ``stats_window`` episodes of the
        whole run (in rank order within an update) and the total count.
        """
        new = self.episodes - self._synced_episodes
        keep = min(new, len(self.episode_returns))
        returns = [self.episode_returns.pop() for _ in range(keep)][::-1]
        lengths = [self.episode_lengths.pop() for _ in range(keep)][::-1]
        reports = _all_gather((transitions, new, returns, lengths))
        for _, _, rank_returns, rank_lengths in reports:
            self.episode_returns.extend(rank_returns)
            self.episode_lengths.extend(rank_lengths)
        self.episodes = self._synced_episodes + sum(report[1] for report in reports)
        self._synced_episodes = self.episodes
        return sum(report[0] for report in reports)

    # ---- run directory, checkpoints ------------------------------------------------------------------------

    def _open_run_dir(self) -> None:
        error: BaseException | None = None
        if self.is_main:
            try:
                super()._open_run_dir()
            except BaseException as exc:
                error = exc
        else:
            self.logger = RunLogger([])  # rank 0 logs for the run
        _raise_if_any_failed(error, "to open the run directory")

    def checkpoint_payload(self) -> dict[str, Any]:
        """Collective: the run's payload (model and optimizer once) with every rank's own part under
        ``"distributed"`` (on rank 0; the other ranks get only their part)."""
        payload = super().checkpoint_payload()
        part = {key: payload[key] for key in ("rng", "trainer", "env_state")}
        parts: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(part, parts, dst=0)
        payload["distributed"] = {"world_size": self.world_size, "ranks": parts,
                                  "env_seeds": [env_seed(self.config.seed, r, self.config.num_envs)
                                                for r in range(self.world_size)]}
        return payload

    def save(self) -> Path | None:
        """Collective: rank 0 writes the checkpoint of the current update; every rank returns its path."""
        if self.run_dir is None:
            return None
        error: BaseException | None = None
        try:
            if self.is_main:
                super().save()
            else:
                self.checkpoint_payload()  # this rank's part, gathered by rank 0
        except BaseException as exc:
            error = exc
        _raise_if_any_failed(error, "to write a checkpoint")
        self.last_checkpoint = checkpoint_path(self.run_dir, self.update)
        return self.last_checkpoint

    def _load_payload(self, path: Path) -> dict[str, Any]:
        """Rank 0 reads the checkpoint and broadcasts it; each rank takes its own part of it."""
        payload: dict[str, Any] | str | None = None
        if self.is_main:
            try:
                payload = load_checkpoint(path, map_location="cpu")
            except CheckpointError as exc:
                payload = str(exc)
        payload = _broadcast(payload)
        if isinstance(payload, str):
            raise CheckpointError(payload)
        assert payload is not None
        part = payload.get("distributed") or {}
        ranks = part.get("ranks")
        if ranks is not None and len(ranks) == self.world_size:
            payload.update(ranks[self.rank])
        elif self.rank:
            log.warning("resume from %s: it was written by %s learner(s), now there are %d; learner %d restarts "
                        "its envs from a fresh reset", path, part.get("world_size", 1), self.world_size, self.rank)
            payload["rng"] = _fresh_rng(rank_seed(self.config.seed, self.rank) + int(payload["update"]))
            payload["trainer"] = {**payload["trainer"], "carry": None, "rnn_state": None}
            payload["env_state"] = None
        return payload

    def restore(self, path: Path) -> None:
        """Continue from ``path`` (collective: rank 0 reads it); see :meth:`Trainer.restore`."""
        super().restore(path)
        self._synced_episodes = self.episodes


def distributed_class(base: type[Trainer]) -> type[DistributedTrainer]:
    """:class:`DistributedTrainer` on top of ``base`` (a :class:`Trainer` subclass, e.g. MAPPO's trainer)."""
    if issubclass(base, DistributedTrainer):
        return base
    if base is Trainer:
        return DistributedTrainer
    return type(f"Distributed{base.__name__}", (DistributedTrainer, base), {"__module__": __name__})
