"""The policy classes a checkpoint may name, so loading one rebuilds its network without importing code by name."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from shoal.errors import CheckpointError
from shoal.policies.decision_transformer import DecisionTransformer
from shoal.policies.policy import Policy, check_saved_config
from shoal.policies.sac import SACPolicy

__all__ = ["DEFAULT_CLASS", "POLICY_CLASSES", "class_name", "rebuild_policy"]

#: The class of files that name none (written before classes were recorded).
DEFAULT_CLASS = "shoal.policies.policy.Policy"

#: Qualified class name (as checkpoints record it) -> the class. Nothing outside this table is ever built.
POLICY_CLASSES: dict[str, type[nn.Module]] = {
    "shoal.policies.policy.Policy": Policy,
    "shoal.policies.sac.SACPolicy": SACPolicy,
    "shoal.policies.decision_transformer.DecisionTransformer": DecisionTransformer,
}


def class_name(policy: nn.Module) -> str:
    """The qualified class name of ``policy`` as checkpoints record it."""
    return f"{type(policy).__module__}.{type(policy).__qualname__}"


def rebuild_policy(name: str | None, config: dict[str, Any], env: Any, source: str,
                   device: torch.device | str | None = None) -> nn.Module:
    """Build the policy class ``name`` (None: the default :class:`Policy`) from its saved ``config`` for ``env``.

    Raises:
        CheckpointError: a class outside :data:`POLICY_CLASSES` (a custom policy: rebuild it yourself and load the
            weights), an empty config, or a config that does not build.
    """
    cls = POLICY_CLASSES.get(name or DEFAULT_CLASS)
    if cls is None or not config:
        raise CheckpointError(
            f"{source} holds a custom policy ({name}){'' if config else ' without a config'}; shoal rebuilds only "
            f"its own classes ({', '.join(POLICY_CLASSES)}): rebuild it yourself and load payload['model']"
        )
    if cls is Policy:
        config = check_saved_config(config, source)
    try:
        return cls.from_env(env, **config, device=device)  # type: ignore[attr-defined]
    except TypeError as exc:
        raise CheckpointError(f"{source}: cannot rebuild its {name} from {config}: {exc}") from exc
