"""Helpers shared by the verified TorchScript traces of acting (:mod:`shoal.train.speed.traced_acting`) and of the PPO
loss
(:mod:`shoal.train.speed.traced_loss`): tracing without warnings, and the random state a check replays."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["rng_state", "set_rng_state", "trace"]


def trace(module: nn.Module, inputs: tuple[Tensor, ...]) -> Any:
    """``torch.jit.trace(module, inputs)`` without its own check or warnings: the callers check every trace
    against the eager computation themselves."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.trace(module, inputs, check_trace=False)


def rng_state(device: torch.device) -> Tensor:
    """The state of the random generator that ops on ``device`` draw from."""
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def set_rng_state(device: torch.device, state: Tensor) -> None:
    """Restore a state taken with :func:`rng_state`."""
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)
