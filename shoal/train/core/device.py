"""Torch devices by name, checked: ``--device auto|cpu|cuda[:i]|mps``."""

from __future__ import annotations

import torch

from shoal.errors import APIUsageError

__all__ = ["resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> cuda, then mps, then cpu; anything else is passed to ``torch.device`` (checked)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise APIUsageError(
            f"device={name!r} is not a torch device (try cpu, cuda, cuda:0, mps, auto)"
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise APIUsageError(f"device={name!r} but CUDA is not available here; use --device cpu or auto")
    if device.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise APIUsageError(f"device={name!r} but MPS is not available here; use --device cpu or auto")
    return device
