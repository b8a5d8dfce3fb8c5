"""Export a trained policy's actor to ONNX, and save/load plain state dicts.

ONNX graph (:func:`export_onnx`)
    inputs, in order: ``obs`` (``[batch, flat_size]`` of the layout's flat dtype: the very rows the emulator
    writes), then ``action_masks`` (bool ``[batch, W]``, only with ``with_action_masks=True``), ``agent_ids``
    (int64 ``[batch]``, only when the policy embeds agent ids), ``h`` and ``c`` (float32 ``[1, batch, lstm_size]``,
    recurrent policies only). Outputs: ``logits`` (as :attr:`PolicyOutput.logits`: masked logits, Gaussian mean,
    or both for hybrid actions), then ``h_out`` and ``c_out`` for recurrent policies. The batch dim is dynamic.
    A recurrent caller resets ``h``/``c`` to zeros itself at episode starts.

    Byte rows of mixed-dtype layouts are decoded with integer and float arithmetic in the graph (ONNX has no
    bit-cast in the opsets torch exports to), so the model takes the same bytes as the torch policy and gives the
    same logits (``float64`` leaves are decoded exactly; ``uint64`` values above ``2**63`` wrap).

Checkpoints (:func:`save_policy`, :func:`load_policy`, :func:`load_state_dict`)
    A plain ``torch.save`` of ``{"format", "config", "obs_layout", "action_layout", "state_dict"}`` with only
    tensors, strings and numbers, so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from shoal.emulation.base import action_mask_width
from shoal.errors import APIUsageError, CheckpointError
from shoal.policies.policy import Policy, check_saved_config
from shoal.policies.registry import DEFAULT_CLASS, POLICY_CLASSES, class_name
from shoal.policies.unflatten import torch_dtype

__all__ = ["export_onnx", "load_policy", "load_state_dict", "run_onnx", "save_policy"]

log = logging.getLogger(__name__)
_FORMAT = "shoal.policy/1"


class _Actor(nn.Module):
    """The policy's actor with positional tensor inputs, as ONNX wants them."""

    def __init__(self, policy: Policy, with_action_masks: bool) -> None:
        super().__init__()
        self.policy = policy
        self.with_action_masks = with_action_masks
        self.with_ids = policy.num_agent_ids > 0

    def forward(self, obs: Tensor, *extra: Tensor) -> Tensor | tuple[Tensor, ...]:
        rest = list(extra)
        masks = rest.pop(0) if self.with_action_masks else None
        ids = rest.pop(0) if self.with_ids else None
        state = (rest[0], rest[1]) if self.policy.is_recurrent else None
        logits, state = self.policy.actor(obs, state, action_masks=masks, agent_ids=ids)
        return logits if state is None else (logits, *state)


@contextlib.contextmanager
def _portable(policy: Policy) -> Iterator[None]:
    encoder = getattr(policy, "encoder", None)  # SACPolicy's MLPs read float features: nothing to switch
    previous, training = getattr(encoder, "portable", None), policy.training
    if encoder is not None:
        encoder.portable = True
    policy.eval()
    try:
        yield
    finally:
        if encoder is not None:
            encoder.portable = previous
        policy.train(training)


def example_inputs(policy: Policy, batch_size: int = 2, *, with_action_masks: bool = False,
                   device: torch.device | str | None = None) -> dict[str, Tensor]:
    """Zero-valued inputs for the exported actor, by ONNX input name (in graph order)."""
    device = policy.device if device is None else device
    layout = policy.obs_layout
    inputs = {"obs": torch.zeros(batch_size, layout.flat_size, dtype=torch_dtype(layout.flat_dtype), device=device)}
    if with_action_masks:
        width = action_mask_width(policy.action_layout) if policy.action_layout.kind != "continuous" else 0
        if not width:
            raise APIUsageError("with_action_masks=True, but this policy's actions are continuous (no mask)")
        inputs["action_masks"] = torch.ones(batch_size, width, dtype=torch.bool, device=device)
    if policy.num_agent_ids:
        inputs["agent_ids"] = torch.zeros(batch_size, dtype=torch.long, device=device)
    if policy.is_recurrent:
        h, c = policy.initial_state(batch_size, device)
        inputs["h"], inputs["c"] = h, c
    return inputs


def export_onnx(policy: Policy, path: str | os.PathLike[str], *, with_action_masks: bool = False,
                opset_version: int | None = None, batch_size: int = 2) -> Path:
    """Export ``policy``'s actor (flat obs -> logits, see the module docstring) to an ONNX file.

    Args:
        policy: the policy (left unchanged: train/eval mode and device are restored).
        path: the ``.onnx`` file to write.
        with_action_masks: add an ``action_masks`` input applied to the logits.
        opset_version: ONNX opset (torch's default when None).
        batch_size: batch of the example inputs used for tracing (the exported batch dim is dynamic).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        APIUsageError: a sequence policy (the Decision Transformer), which acts from a window of past steps.
    """
    if getattr(policy, "is_sequence", False):
        raise APIUsageError(f"export_onnx exports one-step actors; a {type(policy).__name__} reads a window of "
                            "past steps (a token context) and is not exported: save it with save_policy instead")
    path = Path(path)
    actor = _Actor(policy, with_action_masks)
    inputs = example_inputs(policy, batch_size, with_action_masks=with_action_masks)
    batch = torch.export.Dim("batch", min=1)
    dynamic: list[dict[int, Any]] = [{0: batch} for _ in inputs]
    if policy.is_recurrent:
        dynamic[-2:] = [{1: batch}, {1: batch}]
    outputs = ["logits", "h_out", "c_out"] if policy.is_recurrent else ["logits"]
    with _portable(policy), torch.no_grad(), _quiet_exporter():
        # (obs, *extra): the extra inputs' shapes as one tuple, left out when there are none (a plain actor)
        shapes = (dynamic[0], tuple(dynamic[1:])) if len(dynamic) > 1 else (dynamic[0],)
        torch.onnx.export(actor, tuple(inputs.values()), str(path), input_names=list(inputs),
                          output_names=outputs, dynamic_shapes=shapes,
                          opset_version=opset_version,
                          dynamo=True, external_data=False, verbose=False)
    return path


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress prints and warnings (library code must not print)."""
    import io
    import warnings

    noisy = logging.getLogger("torch.onnx")
    level = noisy.level
    noisy.setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()) as captured:
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            noisy.setLevel(level)
            log.debug("torch.onnx.export output:\n%s", captured.getvalue())


def run_onnx(path: str | os.PathLike[str], inputs: dict[str, Any]) -> list[np.ndarray]:
    """Run an exported model on numpy (or tensor) inputs; ``onnxruntime`` when installed, else the pure-Python
    ``onnx.reference`` evaluator (slow, exact enough for checks). Returns the outputs in graph order."""
    feeds = {name: (value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value))
             for name, value in inputs.items()}
    try:
        import onnxruntime  # type: ignore[import-not-found]
    except ImportError:
        import onnx
        from onnx.reference import ReferenceEvaluator

        return list(ReferenceEvaluator(onnx.load(str(path))).run(None, feeds))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return list(session.run(None, feeds))


# --------------------------------------------------------------------------------------------------------------
# State dicts
# --------------------------------------------------------------------------------------------------------------


def save_policy(policy: Policy, path: str | os.PathLike[str]) -> Path:
    """Save ``policy``'s config, layouts (as text, for checking) and state dict to ``path``."""
    path = Path(path)
    torch.save({
        "format": _FORMAT,
        "policy_class": class_name(policy),
        "config": dict(policy.config),
        "obs_layout": repr(policy.obs_layout),
        "action_layout": repr(policy.action_layout),
        "state_dict": {key: value.detach().cpu() for key, value in policy.state_dict().items()},
    }, path)
    return path


def _read(source: str | os.PathLike[str] | dict[str, Any]) -> dict[str, Any]:
    if isinstance(source, dict):
        return source
    try:
        data = torch.load(source, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"no policy checkpoint at {os.fspath(source)!r}") from None
    except Exception as exc:
        raise CheckpointError(f"cannot read policy checkpoint {os.fspath(source)!r}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise CheckpointError(f"{os.fspath(source)!r} is not a shoal policy checkpoint (format {_FORMAT})")
    return data


def load_state_dict(policy: Policy, source: str | os.PathLike[str] | dict[str, Any], *,
                    strict: bool = True) -> Policy:
    """Load parameters into ``policy`` from a :func:`save_policy` file, its dict, or a bare state dict.

    Raises:
        CheckpointError: the checkpoint belongs to another layout or architecture (names what differs).
    """
    data = _read(source)
    state = data.get("state_dict", data)
    for key in ("obs_layout", "action_layout"):
        if key in data and data[key] != repr(getattr(policy, key)):
            raise CheckpointError(f"checkpoint {key} is {data[key]}, but the policy's is {getattr(policy, key)!r}")
    try:
        policy.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint does not fit this policy ({policy.config}): {exc}") from None
    return policy


def load_policy(source: str | os.PathLike[str] | dict[str, Any], env: Any = None, *, obs_layout: Any = None,
                action_layout: Any = None, device: torch.device | str | None = None) -> Policy:
    """Rebuild a :class:`Policy` from :func:`save_policy` output for ``env`` (or explicit layouts)."""
    data = _read(source)
    if env is not None:
        obs_layout, action_layout = env.obs_layout, env.action_layout
    if obs_layout is None or action_layout is None:
        raise APIUsageError("load_policy needs the env (or obs_layout and action_layout) the policy was trained on")
    if "config" not in data:
        raise CheckpointError("checkpoint has no 'config'; build the Policy yourself and use load_state_dict")
    where = "the saved policy" if isinstance(source, dict) else str(source)
    name = data.get("policy_class") or DEFAULT_CLASS
    cls = POLICY_CLASSES.get(name)
    if cls is None:
        raise CheckpointError(f"{where} holds a {name}, which shoal does not rebuild; build it yourself and use "
                              "load_state_dict")
    config = check_saved_config(data["config"], where) if cls is Policy else data["config"]
    policy = cls(obs_layout, action_layout, **config)
    load_state_dict(policy, data)
    return policy.to(device)
