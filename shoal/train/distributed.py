"""Scaling past one process: data-parallel learners with torch.distributed, and rollouts on a Ray cluster.

Data-parallel learners (``torchrun``)
    Every process launched by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``) runs a
    :class:`DistributedTrainer`: its own vector env, its own rollouts, and a copy of the policy wrapped in
    :class:`~torch.nn.parallel.DistributedDataParallel`, so gradients are averaged over every learner and all
    copies stay identical. The process group uses ``nccl`` when the learner's device is a GPU and ``gloo``
    otherwise. :func:`shoal.train.train` and ``shoal train`` switch to it by themselves under ``torchrun``:

        torchrun --nproc-per-node 2 -m shoal train CartPole-v1 --total-steps 300000 --run-dir runs/ddp

    The config is per learner (``num_envs``, ``batch_size`` and ``minibatch_size`` of each process, like a
    per-GPU batch size); ``total_steps`` is the budget of the whole run, counted over every learner. One update
    of ``W`` learners is exactly one single-process update on the concatenation of their batches with
    ``minibatch_size * W`` (see :func:`distributed_ppo_update`): the loss of each minibatch is the mean over the
    union of the learners' minibatches, and advantages are normalized with statistics of that union.

Seeds
    Learner ``r`` of a run with seed ``s`` and ``num_envs = n`` seeds its envs from ``s + r * n``: env ``i`` of
    learner ``r`` is reset with ``s + r * n + i``, exactly the seed of env ``r * n + i`` of one vector env of
    ``W * n`` envs, so no two envs of a run share a seed. The policy is initialized from ``s`` on every learner
    (and broadcast from rank 0 by DDP); action sampling and minibatch shuffling of learner ``r > 0`` use
    ``s + r * RANK_SEED_STRIDE`` (rank 0 keeps ``s``, so a one-learner run equals a plain run).

Logging and checkpoints
    Only rank 0 writes the run directory (config, scalars, TensorBoard events, checkpoints) and runs the
    callbacks (the command line's dashboard). Finished episodes, step counts and loss statistics are gathered
    from every learner after each update, so what rank 0 logs describes the whole run. A checkpoint holds the
    shared model and optimizer once plus each rank's own part (RNG states, rollout carry-over, env snapshot);
    on resume rank 0 reads it and broadcasts it, and every rank continues from its own part (exactly, on the
    serial backend, when the number of learners is unchanged).

Ray rollouts
    With ``backend="ray"`` the env workers are Ray actors; :func:`connect_ray` joins the cluster at
    ``ray_address`` (``ray.init(address=...)``, once) or starts a local Ray, and the actors are spread over the
    cluster's nodes. The learner stays in the calling process.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from shoal.errors import APIUsageError, CheckpointError, ShoalError
from shoal.train.checkpoint import checkpoint_path, load_checkpoint
from shoal.train.config import TrainConfig
from shoal.train.logger import LogRecord, RunLogger
from shoal.train.ppo import _advantages, _sequence_forward, clip_grad_norm, ppo_loss
from shoal.train.trainer import Trainer, resolve_device

__all__ = [
    "RANK_SEED_STRIDE",
    "DistContext",
    "DistributedTrainer",
    "TorchrunEnv",
    "connect_ray",
    "distributed_class",
    "distributed_ppo_update",
    "env_seed",
    "init_distributed",
    "is_distributed",
    "make_trainer",
    "process_group_backend",
    "rank_seed",
    "torchrun_env",
    "vector_backend_kwargs",
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


def _all_sum(values: Tensor) -> Tensor:
    """Sum ``values`` over every learner (in place; identity for one learner)."""
    if _world() > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


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
# The update: PPO over the union of every learner's batch
# ------------------------------------------------------------------------------------------------------------


def _moments(adv: Tensor, valid: Tensor | None, empty: bool) -> Tensor:
    """float64 ``[count, sum, sum of squares]`` of the valid entries of ``adv`` (zeros for an empty minibatch)."""
    if empty:
        return adv.new_zeros(3, dtype=torch.float64)
    a = adv.double() if valid is None else torch.where(valid, adv, 0.0).double()
    n = a.new_tensor(float(a.numel()) if valid is None else float(valid.sum()))
    return torch.stack([n, a.sum(), (a * a).sum()])


def _normalize(adv: Tensor, valid: Tensor | None, union: Sequence[float]) -> Tensor:
    """``adv`` normalized with the mean and unbiased std of the union's moments (as in
    :func:`~shoal.train.ppo.ppo_loss`: ``(adv - mean) / (std + 1e-8)``, zero where not valid)."""
    total, s1, s2 = union
    if total == 0:
        return adv
    mean = s1 / total
    std = math.sqrt(max(s2 - s1 * mean, 0.0) / max(total - 1.0, 1.0))
    out = (adv - mean) / (std + 1e-8)
    return out if valid is None else torch.where(valid, out, 0.0)


def distributed_ppo_update(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: dict[str, Any],
    cfg: TrainConfig,
    generator: torch.Generator,
    progress: float = 0.0,
    value_norm: Any = None,
) -> dict[str, float]:
    """One PPO update of this learner's rollout, equal to one update on every learner's rollouts together.

    :func:`shoal.train.ppo.ppo_update` phase by phase (with one learner, exactly its computation; a test
    checks it bit for bit), plus what several learners must agree on. With ``W`` learners, minibatch ``k`` of
    the update is the union of minibatch ``k`` of every learner:

    * the number of minibatches is agreed: ``round(sum of counts / (W * unit))``, ``unit`` being
      ``minibatch_size`` transitions (or segments of ``minibatch_size // horizon`` for recurrent policies and
      prioritized sampling) -- the single-process count for the concatenated batch and ``W * minibatch_size``;
    * advantages are normalized with the mean and (unbiased) std of the union (one all-reduce per minibatch);
    * each learner's mean loss is scaled by ``W * n_local / n_union`` so DDP's gradient average is the gradient
      of the mean over the union, however the live transitions split between learners;
    * ``value_norm`` is updated with the value targets of every learner; early stopping on ``target_kl`` uses
      the union's KL, so every learner stops at the same epoch; the statistics are those of the union.

    Advantages, V-trace ratios and prioritized sampling stay per learner (segments are independent).

    Args:
        model: the policy, or its :class:`~torch.nn.parallel.DistributedDataParallel` wrapper (which
            all-reduces the gradients during ``backward``).
        optimizer, data, cfg, generator, progress, value_norm: as for :func:`~shoal.train.ppo.ppo_update`;
            ``data`` is this learner's part of the batch.

    Returns:
        The statistics of :func:`~shoal.train.ppo.ppo_update`, over the union of every learner's batch.
    """
    policy = model.module if isinstance(model, DistributedDataParallel) else model
    world = _world()
    distributed = world > 1
    device = data["values"].device
    valid = data["valid"]
    num_segments, horizon = valid.shape
    prioritized = cfg.prio_alpha > 0
    sequences = bool(getattr(policy, "is_recurrent", False)) or prioritized
    use_masks = data["action_masks"] is not None and not bool(data["action_masks"].all())
    use_ids = bool(getattr(policy, "num_agent_ids", 0))
    loss_kwargs = dict(
        clip_coef=cfg.clip_coef,
        dual_clip=cfg.dual_clip,
        clip_vloss=cfg.clip_vloss,
        vf_clip_coef=cfg.vf_clip_coef,
        vf_coef=cfg.vf_coef,
        ent_coef=cfg.ent_coef,
        norm_adv=cfg.norm_adv and not distributed,  # distributed: normalized over the union below
    )

    # ---- Phase 1: advantages and value targets (per learner: segments are independent) --------------------
    vtrace = cfg.advantage == "vtrace"
    ratios = torch.ones_like(data["values"]) if vtrace else None
    advantages = _advantages(data, ratios, cfg)
    returns = advantages + data["values"]
    if value_norm is not None:  # distributed: the targets of every learner
        targets = returns[valid]
        if distributed:
            targets = torch.cat([t.to(targets.device) for t in _all_gather(targets.detach().cpu())])
        value_norm.update(targets)

    # ---- Phase 2: minibatch plan, the number of minibatches agreed by every learner -----------------------
    critic_obs = data.get("critic_obs")
    if sequences:
        per_batch = max(1, min(num_segments, cfg.minibatch_size // horizon))
        count, unit = num_segments, per_batch
    else:
        live = valid.reshape(-1).nonzero().squeeze(1)

        def flat(x: Tensor) -> Tensor:
            return x.reshape(num_segments * horizon, *x.shape[2:])[live]

        flat_data = {"obs": flat(data["obs"]), "actions": flat(data["actions"])}
        if use_masks:
            flat_data["action_masks"] = flat(data["action_masks"])
        if use_ids:
            flat_data["agent_ids"] = flat(data["agent_ids"])
        if critic_obs is not None:
            flat_data["critic_obs"] = flat(critic_obs)
        columns = torch.stack([flat(data["log_probs"]), flat(data["values"]), flat(advantages), flat(returns)], 1)
        count, unit = len(live), cfg.minibatch_size
    total = count
    if distributed:
        total = float(_all_sum(torch.tensor([float(count)], dtype=torch.float64, device=device)))
    num_minibatches = max(1, round(total / (world * unit)))

    params = [p for p in policy.parameters() if p.requires_grad]
    beta = cfg.prio_beta0 + (1.0 - cfg.prio_beta0) * min(max(progress, 0.0), 1.0)
    history: list[Tensor] = []
    epochs_done = 0
    for _epoch in range(cfg.update_epochs):
        epochs_done += 1
        order = torch.tensor_split(torch.randperm(count, generator=generator).to(device), num_minibatches)
        epoch_kl: list[Tensor] = []
        union_moments: list[list[float]] | None = None
        if distributed and not vtrace and not prioritized:  # advantages are fixed: one all-reduce per epoch
            local = [
                _moments(advantages[index], valid[index], False) if sequences else
                _moments(columns[index, 2], None, len(index) == 0)
                for index in order
            ]
            union_moments = _all_sum(torch.stack(local)).tolist()
        for mb in range(num_minibatches):
            if vtrace and (history or mb):
                advantages = _advantages(data, ratios, cfg)
                returns = advantages + data["values"]
                if not sequences:
                    columns[:, 2], columns[:, 3] = flat(advantages), flat(returns)

            # -- choose the minibatch (an empty one still joins the gradient all-reduce, with weight 0)
            weights = None
            index = order[mb]
            empty = len(index) == 0
            if sequences:
                if prioritized:
                    score = torch.where(valid, advantages.abs(), 0.0).sum(1).double().cpu()
                    probs = (score + 1e-8) ** cfg.prio_alpha
                    probs = probs / probs.sum()
                    index = torch.multinomial(probs.float(), per_batch, False, generator=generator)
                    weights = ((num_segments * probs[index]) ** -beta).float().to(device)[:, None]
                    weights = weights.expand(-1, horizon)
                    index = index.to(device)
                    empty = False
                elif empty:  # a stand-in segment, all of it masked out
                    index = torch.zeros(1, dtype=torch.long, device=device)
                new_log_probs, entropy, new_values = _sequence_forward(model, data, index, use_masks, use_ids)
                mb_valid: Tensor | None = valid[index] & (not empty)
                old_log_probs, old_values = data["log_probs"][index], data["values"][index]
                mb_adv, mb_ret = advantages[index], returns[index]
            else:
                out = model(
                    flat_data["obs"][index],
                    action=flat_data["actions"][index],
                    action_masks=flat_data["action_masks"][index] if use_masks else None,
                    agent_ids=flat_data["agent_ids"][index] if use_ids else None,
                    critic_obs=flat_data["critic_obs"][index] if "critic_obs" in flat_data else None,
                )
                new_log_probs, entropy, new_values = out.log_prob, out.entropy, out.value
                mb_valid = torch.ones(0, dtype=torch.bool, device=device) if empty else None
                old_log_probs, old_values, mb_adv, mb_ret = columns[index].unbind(1)

            # -- loss: advantages normalized over the union, the mean loss weighted by this learner's share
            share = 1.0
            if distributed:
                mine = _moments(mb_adv, mb_valid, empty)
                union = union_moments[mb] if union_moments is not None else _all_sum(mine.clone()).tolist()
                if cfg.norm_adv:
                    mb_adv = _normalize(mb_adv, mb_valid, union)
                share = float(mine[0]) / union[0] if union[0] else 0.0
            if value_norm is not None:
                old_values, mb_ret = value_norm.normalize(old_values), value_norm.normalize(mb_ret)
            out_loss = ppo_loss(
                new_log_probs,
                old_log_probs,
                mb_adv,
                new_values,
                old_values,
                mb_ret,
                entropy,
                mb_valid,
                weights=weights,
                **loss_kwargs,
            )

            # -- step (DDP averages the gradients over the learners during backward)
            for param in params:
                param.grad = None
            (out_loss.loss * (share * world) if distributed else out_loss.loss).backward()
            grad_norm = clip_grad_norm(params, cfg.max_grad_norm)
            optimizer.step()
            if ratios is not None:
                if sequences:
                    ratios[index] = torch.where(valid[index], out_loss.ratio, 1.0)
                elif not empty:
                    ratios.view(-1)[live[index]] = out_loss.ratio

            row = torch.stack(
                [
                    out_loss.policy_loss,
                    out_loss.value_loss,
                    out_loss.entropy,
                    out_loss.approx_kl,
                    out_loss.old_approx_kl,
                    out_loss.clipfrac,
                    grad_norm.to(out_loss.loss.device).float(),
                ]
            )
            history.append(row * share if distributed else row)  # the shares sum to 1 over the learners
            epoch_kl.append(out_loss.approx_kl * share if distributed else out_loss.approx_kl)
        if cfg.target_kl is not None:
            kl = torch.stack(epoch_kl).mean()
            if float(_all_sum(kl.double().reshape(1)) if distributed else kl) > cfg.target_kl:
                break

    # ---- Phase 3: statistics over the union -----------------------------------------------------------------
    v = data["values"][valid].double()
    r = returns[valid].double()
    moments = torch.cat(
        [
            torch.stack(history).mean(0).double(),
            torch.stack(
                [
                    r.new_tensor(float(r.numel())),
                    r.sum(),
                    (r * r).sum(),
                    (r - v).sum(),
                    ((r - v) ** 2).sum(),
                    advantages[valid].double().sum(),
                ]
            ),
        ]
    )
    means = (_all_sum(moments) if distributed else moments).tolist()
    names = ("policy_loss", "value_loss", "entropy", "approx_kl", "old_approx_kl", "clipfrac", "grad_norm")
    stats = dict(zip(names, means[:7], strict=True))
    n, r_sum, r_sq, d_sum, d_sq, adv_sum = means[7:]
    var_r = r_sq / n - (r_sum / n) ** 2 if n else 0.0
    var_d = d_sq / n - (d_sum / n) ** 2 if n else 0.0
    stats["explained_variance"] = math.nan if var_r <= 0 else 1.0 - var_d / var_r
    stats["advantage_mean"] = adv_sum / n if n else 0.0
    stats["epochs"] = float(epochs_done)
    stats["minibatches"] = float(len(history))
    return stats


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
    """A :class:`~shoal.train.trainer.Trainer` for one of several data-parallel learners (see the module docs).

    Joins the process group (from ``torchrun``'s environment) unless one exists, agrees with the other learners
    on the config (rank 0's ``run_dir`` wins, as its default holds a time stamp; any other difference is an
    error), builds its own vector env seeded from :func:`env_seed`, and wraps the policy in DDP.

    Args:
        config, env_fn, policy: as for :class:`Trainer` (the same on every learner).
        callbacks: run on rank 0 only.
        find_unused_parameters: passed to DDP, for policies with parameters the loss does not use.
        timeout: seconds a collective waits for the other learners when this call creates the group.
    """

    def __init__(
        self,
        config: TrainConfig,
        env_fn: Callable[[], Any] | None = None,
        policy: nn.Module | None = None,
        callbacks: Sequence[Callback] = (),
        *,
        find_unused_parameters: bool = False,
        timeout: float | None = None,
    ) -> None:
        config = config.validate()
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
        device_ids = None
        if self.device.type == "cuda":
            device_ids = [self.device.index if self.device.index is not None else torch.cuda.current_device()]
        self.ddp = DistributedDataParallel(self.policy, device_ids=device_ids,
                                           find_unused_parameters=find_unused_parameters)

    @property
    def is_main(self) -> bool:
        """Rank 0: writes the run directory and runs the callbacks."""
        return self.rank == 0

    @property
    def env_seed(self) -> int:
        """Seed of this learner's env 0: :func:`env_seed` of the config's seed, the rank and ``num_envs``."""
        return env_seed(self.config.seed, self.rank, self.config.num_envs)

    # ---- learning ------------------------------------------------------------------------------------------

    def learn(self) -> dict[str, float]:
        """One update over every learner's rollout (DDP), then gather step counts and finished episodes."""
        t = time.perf_counter()
        data = self.buffer.data()
        lr = self.learning_rate()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.policy.train()
        stats = distributed_ppo_update(
            self.ddp,
            self.optimizer,
            data.to_torch(self.device),
            self.config,
            self.generator,
            progress=self.global_step / self.config.total_steps,
            value_norm=getattr(self, "value_norm", None),
        )
        self.global_step += self._gather_progress(data.num_transitions)
        self.update += 1
        stats["learning_rate"] = lr
        self._times["learn"] += time.perf_counter() - t
        return stats

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


def make_trainer(
    config: TrainConfig,
    env_fn: Callable[[], Any] | None = None,
    policy: nn.Module | None = None,
    callbacks: Sequence[Callback] = (),
) -> Trainer:
    """The trainer for ``config``: the algorithm's trainer (:func:`shoal.train.mappo.trainer_class`), as one of
    several data-parallel learners (:class:`DistributedTrainer`) under ``torchrun`` with ``WORLD_SIZE > 1`` or in
    such a process group."""
    from shoal.train.mappo import trainer_class

    cls = trainer_class(config)
    if is_distributed():
        cls = distributed_class(cls)
    return cls(config, env_fn=env_fn, policy=policy, callbacks=callbacks)


# ------------------------------------------------------------------------------------------------------------
# Ray rollouts
# ------------------------------------------------------------------------------------------------------------


def _local_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def connect_ray(address: str | None = None, num_cpus: int | None = None, **init_kwargs: Any) -> Any:
    """Connect to Ray once: ``ray.init(address=address)``, or a local ``ray.init(num_cpus=...)`` without one.

    Does nothing when Ray is already initialized (a warning says so if ``address`` was given). When joining a
    cluster, this process's ``shoal`` package is shipped to it (``runtime_env={"py_modules": [shoal]}``, about
    0.6 MB) unless ``runtime_env`` is given, so the env actors run the driver's version of shoal; the nodes need
    Ray, torch and the env's own packages installed.

    Args:
        address: a cluster address (``"HEAD_IP:6379"``, ``"ray://HEAD_IP:10001"`` or ``"auto"``); None starts a
            local Ray instance.
        num_cpus: CPUs of the local instance (default: the CPUs this process may use); ignored with an address.
        **init_kwargs: more ``ray.init`` keywords (e.g. ``runtime_env``).

    Returns:
        The ``ray`` module.
    """
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise APIUsageError("backend='ray' needs Ray: pip install 'shoal[ray]'") from exc
    if ray.is_initialized():
        if address is not None:
            log.warning("Ray is already initialized in this process; ray_address=%r is ignored", address)
        return ray
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    kwargs.update(init_kwargs)
    if address is not None:
        if "runtime_env" not in kwargs:
            import shoal

            kwargs["runtime_env"] = {"py_modules": [shoal]}
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus or _local_cpus(), **kwargs)
    return ray


def vector_backend_kwargs(config: TrainConfig) -> dict[str, Any]:
    """Extra keywords of :func:`shoal.vector.make` for ``config``'s backend.

    For ``"ray"``: connects first (:func:`connect_ray` with ``config.ray_address``) and spreads the env actors
    over the cluster's nodes. Other backends: none.
    """
    if config.backend != "ray":
        return {}
    connect_ray(getattr(config, "ray_address", None))
    return {"actor_options": {"scheduling_strategy": "SPREAD"}}
