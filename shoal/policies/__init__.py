"""Policies (torch): encoders built from an observation layout, action heads with legal-action masks, an LSTM,
centralized critics, and ONNX export. Acting only: optimizers live in :mod:`shoal.train`."""

from __future__ import annotations

from shoal.policies.distributions import (
    ActionDistribution,
    DiagGaussian,
    HybridDistribution,
    MaskedCategorical,
    MultiCategorical,
    masked_logits,
)
from shoal.policies.encoders import ObservationEncoder, encoder_kind
from shoal.policies.export import export_onnx, load_policy, load_state_dict, run_onnx, save_policy
from shoal.policies.policy import (
    Policy,
    PolicyOutput,
    ResidualCritic,
    centralized_input,
    centralized_input_size,
    float_features,
)
from shoal.policies.unflatten import unflatten_tensor

__all__ = [
    # policy
    "Policy",
    "PolicyOutput",
    "ObservationEncoder",
    "encoder_kind",
    # observations
    "unflatten_tensor",
    "float_features",
    "ResidualCritic",
    "centralized_input",
    "centralized_input_size",
    # distributions
    "ActionDistribution",
    "DiagGaussian",
    "HybridDistribution",
    "MaskedCategorical",
    "MultiCategorical",
    "masked_logits",
    # export and checkpoints
    "export_onnx",
    "run_onnx",
    "save_policy",
    "load_policy",
    "load_state_dict",
]
