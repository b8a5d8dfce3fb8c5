"""Soft actor-critic networks for emulated envs with ``Box`` or ``Discrete`` actions.

:class:`SACPolicy` holds everything soft actor-critic learns: the actor, twin Q critics, their Polyak-averaged
targets and the entropy temperature ``log_alpha``. It acts through the same contract as
:class:`~shoal.policies.Policy` (``forward`` returns a :class:`~shoal.policies.PolicyOutput`), so
:class:`~shoal.train.acting.RowActor`, evaluation and ``shoal eval`` run it unchanged.

Design:
    * Inputs are :func:`~shoal.policies.float_features` of the flat rows (float leaves as they are, integer
      leaves scaled into ``[-1, 1]``), plus a one-hot agent id for parameter sharing over agent slots. Image
      observations are refused: these are MLPs.
    * Box actions: a tanh-squashed Gaussian with a state-dependent std, mapped affinely onto the space's bounds
      (which must be finite). The critics read the action in ``[-1, 1]`` units.
    * Discrete actions: a categorical actor over the legal actions; each critic outputs one value per action, so
      the soft value is an exact expectation (no sampling).
    * A centralized critic (``critic_input_size > 0``) reads a given float32 row per transition (built by the
      trainer from the whole env, see :mod:`shoal.train.core.centralized`) in place of the actor's features,
      plus the slot's own action (Box); the actor stays decentralized.
    * The two critics are one ensemble (weights ``[2, in, out]``, batched matrix products): one call evaluates
      both, which is what makes small-network SAC fast on a CPU.
"""

from __future__ import annotations

import copy
import itertools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shoal.emulation.actions import ActionLayout
from shoal.emulation.base import action_mask_width
from shoal.emulation.layout import Layout, compile_layout
from shoal.errors import APIUsageError
from shoal.policies.distributions import masked_logits, register_squash_bounds
from shoal.policies.encoders import encoder_kind
from shoal.policies.policy import PolicyOutput, env_layouts, float_features
from shoal.policies.unflatten import torch_dtype

__all__ = ["EnsembleLinear", "SACPolicy", "TwinCritic"]

_LOG_STD_RANGE = (-5.0, 2.0)
_TANH_EPS = 1e-6


class EnsembleLinear(nn.Module):
    """``members`` independent linear layers applied at once: ``[members, N, in] -> [members, N, out]``.

    Initialized as ``nn.Linear`` is (uniform in ``+-1/sqrt(in_features)``), member by member.
    """

    def __init__(self, members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(members, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, 1, out_features).uniform_(-bound, bound))

    def forward(self, x: Tensor, frozen: bool = False) -> Tensor:
        """``frozen``: use detached weights (gradients flow to ``x`` only, e.g. the actor's loss through Q)."""
        if frozen:
            return torch.baddbmm(self.bias.detach(), x, self.weight.detach())
        return torch.baddbmm(self.bias, x, self.weight)


class TwinCritic(nn.Module):
    """Two Q networks as one ensemble MLP: ``[N, in] -> [2, N, out]``."""

    def __init__(self, in_features: int, hidden_size: int, num_layers: int, out_features: int) -> None:
        super().__init__()
        widths = [in_features] + [hidden_size] * num_layers
        self.layers = nn.ModuleList(EnsembleLinear(2, a, b) for a, b in itertools.pairwise(widths))
        self.out = EnsembleLinear(2, widths[-1], out_features)

    def forward(self, x: Tensor, frozen: bool = False) -> Tensor:
        h = x.unsqueeze(0).expand(2, *x.shape)
        for layer in self.layers:
            h = F.relu(layer(h, frozen))
        return self.out(h, frozen)


def _mlp(in_features: int, hidden_size: int, num_layers: int, out_features: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = in_features
    for _ in range(num_layers):
        layers += [nn.Linear(width, hidden_size), nn.ReLU()]
        width = hidden_size
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


class SACPolicy(nn.Module):
    """Actor, twin critics, target critics and temperature of soft actor-critic (see the module docstring).

    Args:
        obs_layout: the observation :class:`~shoal.emulation.layout.Layout` (or a space).
        action_layout: the :class:`~shoal.emulation.actions.ActionLayout` (or a native action space): a ``Box``
            with finite bounds, or a ``Discrete``.
        hidden_size: width of every hidden layer of the actor and the critics.
        num_layers: hidden layers of each network (>= 1).
        num_agent_ids: agent slots to tell apart with a one-hot id (parameter sharing); 0 disables.
        critic_input_size: width of a centralized critic input row; 0: the critics read the actor's features.
        init_alpha: the entropy temperature before any tuning.
        device: where to put the parameters.

    Raises:
        APIUsageError: an action layout other than Box or Discrete, unbounded Box actions, or an image
            observation (the message says what to use instead).
    """

    def __init__(self, obs_layout: Layout | Any, action_layout: ActionLayout | Any, *, hidden_size: int = 256,
                 num_layers: int = 2, num_agent_ids: int = 0, critic_input_size: int = 0, init_alpha: float = 1.0,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        if hidden_size < 1 or num_layers < 1 or num_agent_ids < 0 or critic_input_size < 0 or not init_alpha > 0:
            raise APIUsageError(f"hidden_size={hidden_size} and num_layers={num_layers} must be >= 1, "
                                f"num_agent_ids={num_agent_ids} and critic_input_size={critic_input_size} >= 0 and "
                                f"init_alpha={init_alpha} > 0")
        self.obs_layout = compile_layout(obs_layout)
        self.action_layout = action_layout if isinstance(action_layout, ActionLayout) else ActionLayout(action_layout)
        kind = self.action_layout.kind
        if kind not in ("continuous", "discrete"):
            raise APIUsageError(
                f"SAC needs Box or Discrete actions; this env's actions are {kind} ({self.action_layout.space}). "
                "Train it with --algo ppo (which handles MultiDiscrete and hybrid actions)"
            )
        images = [leaf.path for leaf in self.obs_layout.leaves if encoder_kind(leaf) == "image"]
        if images:
            raise APIUsageError(
                f"SAC's networks are MLPs over the flat observation; the image leaf {images[0]!r} needs a CNN. "
                "Train image observations with --algo ppo"
            )
        self.config: dict[str, Any] = dict(hidden_size=hidden_size, num_layers=num_layers,
                                           num_agent_ids=num_agent_ids, critic_input_size=critic_input_size,
                                           init_alpha=init_alpha)
        self.kind = kind
        self.num_agent_ids = num_agent_ids
        self.critic_input_size = critic_input_size
        self.is_recurrent = False
        self._flat_dtype = torch_dtype(self.obs_layout.flat_dtype)
        zero = torch.zeros((1, self.obs_layout.flat_size), dtype=self._flat_dtype)
        self.feature_size = int(float_features(self.obs_layout, zero, scaled=True).shape[-1]) + num_agent_ids
        critic_features = critic_input_size or self.feature_size
        if kind == "continuous":
            register_squash_bounds(self, self.action_layout, "SAC")
            self.action_size = int(self.action_layout.num_continuous)
            self.actor_net = _mlp(self.feature_size, hidden_size, num_layers, 2 * self.action_size)
            self.critic = TwinCritic(critic_features + self.action_size, hidden_size, num_layers, 1)
        else:
            self.action_size = int(action_mask_width(self.action_layout))
            self.actor_net = _mlp(self.feature_size, hidden_size, num_layers, self.action_size)
            self.critic = TwinCritic(critic_features, hidden_size, num_layers, self.action_size)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(init_alpha), dtype=torch.float32))
        self.to(device)

    @classmethod
    def from_env(cls, env: Any, **kwargs: Any) -> SACPolicy:
        """Build the networks for ``env`` (an emulator or vector env with ``obs_layout`` and ``action_layout``)."""
        return cls(*env_layouts(env), **kwargs)

    @property
    def device(self) -> torch.device:
        return self.log_alpha.device

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> None:
        """SAC's networks are feed-forward: no recurrent state."""
        return None

    # ---- pieces the learner uses -----------------------------------------------------------------------------

    def features(self, obs: Tensor, agent_ids: Tensor | None = None) -> Tensor:
        """Flat rows ``[N, flat_size]`` (+ int64 ids ``[N]``) -> float32 inputs ``[N, feature_size]``."""
        x = float_features(self.obs_layout, obs, scaled=True)
        if self.num_agent_ids:
            if agent_ids is None:
                raise APIUsageError(f"this SAC policy tells {self.num_agent_ids} agent slots apart: pass agent_ids")
            x = torch.cat([x, F.one_hot(agent_ids.long(), self.num_agent_ids).to(x.dtype)], -1)
        return x

    def squashed_sample(self, features: Tensor, deterministic: bool = False) -> tuple[Tensor, Tensor]:
        """Box actions: ``(action in [-1, 1] units [N, A], log-probability [N])`` of the squashed Gaussian
        (reparameterized, so gradients reach the actor). Deterministic: ``tanh(mean)``, log-probability of it."""
        mean, log_std = self.actor_net(features).chunk(2, -1)
        log_std = log_std.clamp(*_LOG_STD_RANGE)
        std = log_std.exp()
        noise = torch.zeros_like(mean) if deterministic else torch.randn_like(mean)
        pre = mean + std * noise
        squashed = torch.tanh(pre)
        log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - torch.log1p(-squashed.pow(2) + _TANH_EPS).sum(-1)
        return squashed, log_prob

    def logits(self, features: Tensor, action_masks: Tensor | None = None) -> Tensor:
        """Discrete actions: masked logits ``[N, n]`` (illegal actions at the dtype's minimum)."""
        return masked_logits(self.actor_net(features), action_masks)

    def to_env_units(self, squashed: Tensor) -> Tensor:
        """Box actions in ``[-1, 1]`` units -> the action space's units."""
        return self.center + self.half_range * squashed

    def to_unit_range(self, action: Tensor) -> Tensor:
        """Box actions in the space's units -> ``[-1, 1]`` (clamped)."""
        return ((action.to(self.center.dtype) - self.center) / self.half_range).clamp(-1.0, 1.0)

    def q_values(self, features: Tensor, unit_actions: Tensor | None = None, *, target: bool = False,
                 frozen: bool = False) -> Tensor:
        """Both critics: ``[2, N]`` for Box actions (given in ``[-1, 1]`` units), ``[2, N, n]`` for Discrete.

        ``features``: float32 ``[N, critic_input_size]`` centralized inputs when the policy has them, else the
        actor's :meth:`features` ``[N, feature_size]``. ``target``: the Polyak-averaged target critics.
        ``frozen``: no gradient to the critics' weights.
        """
        critic = self.critic_target if target else self.critic
        if self.kind == "continuous":
            assert unit_actions is not None
            return critic(torch.cat([features, unit_actions], -1), frozen).squeeze(-1)
        return critic(features, frozen)

    # ---- the Policy contract (acting, evaluation, export) ---------------------------------------------------

    def forward(self, obs: Tensor, state: Any = None, *, done: Tensor | None = None,
                action_masks: Tensor | None = None, action: Tensor | None = None,
                agent_ids: Tensor | None = None, critic_obs: Tensor | None = None,
                deterministic: bool = False) -> PolicyOutput:
        """Sample (or take the most likely) actions for flat rows ``[B, flat_size]``.

        Returns a :class:`~shoal.policies.PolicyOutput` with ``action`` float32 ``[B, A]`` in the space's units
        (Box) or int64 ``[B]`` (Discrete), its ``log_prob`` ``[B]`` (given ``action`` for Discrete: of that
        action), ``entropy`` ``[B]`` (Box: the sample's ``-log_prob``), ``value`` None (SAC has no state value
        head), ``state`` None and ``logits`` (the masked logits, or the squashed mean in the space's units).
        """
        features = self.features(obs, agent_ids)
        if self.kind == "continuous":
            if action is not None:
                raise APIUsageError("SACPolicy does not evaluate given Box actions (the tanh squashing makes their "
                                    "log-probability ill-defined at the bounds)")
            squashed, log_prob = self.squashed_sample(features, deterministic)
            env_action = self.to_env_units(squashed)
            mean = self.to_env_units(torch.tanh(self.actor_net(features).chunk(2, -1)[0]))
            return PolicyOutput(env_action, log_prob, -log_prob, None, None, mean)
        logits = self.logits(features, action_masks)
        log_probs = torch.log_softmax(logits, -1)
        if action is None:
            action = logits.argmax(-1) if deterministic else torch.multinomial(log_probs.exp(), 1).squeeze(-1)
        action = action.long().reshape(-1)
        probs = log_probs.exp()
        entropy = -(probs * torch.where(probs > 0, log_probs, torch.zeros_like(log_probs))).sum(-1)
        return PolicyOutput(action, log_probs.gather(-1, action[:, None]).squeeze(-1), entropy, None, None, logits)

    def actor(self, obs: Tensor, state: Any = None, *, done: Tensor | None = None,
              action_masks: Tensor | None = None, agent_ids: Tensor | None = None) -> tuple[Tensor, None]:
        """The actor alone: ``(logits, None)``: masked logits (Discrete) or the deterministic action in the
        space's units (Box)."""
        features = self.features(obs, agent_ids)
        if self.kind == "continuous":
            return self.to_env_units(torch.tanh(self.actor_net(features).chunk(2, -1)[0])), None
        return self.logits(features, action_masks), None

    def clip_action(self, action: Tensor) -> Tensor:
        """Actions are squashed into the bounds already; clamp away float rounding at the edges."""
        if self.kind == "continuous":
            return torch.max(torch.min(action, self.center + self.half_range), self.center - self.half_range)
        return action

    def soft_update_targets(self, tau: float) -> None:
        """Polyak averaging: ``target <- (1 - tau) * target + tau * critic``."""
        with torch.no_grad():
            for target, source in zip(self.critic_target.parameters(), self.critic.parameters(), strict=True):
                target.lerp_(source, tau)
