"""The default actor-critic :class:`Policy`, built from an emulated env's observation and action layouts.

Data flow for a batch of flat observation rows ``[N, flat_size]``::

    rows --unflatten (views)--> leaves --per-leaf encoders--> concat (+ agent-id embedding) --> trunk MLP
         --> [LSTM] --> action head (masked logits / Gaussian) and value head (or a separate centralized critic)

Action heads by ``action_layout.kind``
    ``discrete``: one categorical over ``n``; ``multi_discrete``: one categorical per ``nvec`` entry; ``continuous``:
    a diagonal Gaussian; ``hybrid``: both side by side (see :class:`~shoal.emulation.actions.ActionLayout`).

Box actions: scaling and clipping
    The Gaussian is parameterised in normalised units and mapped to action units: for dims with finite bounds and
    ``high - low <= 1e4`` the mean is ``center + half_range * mu`` and the std ``half_range * exp(log_std)``
    (so a fresh policy explores the whole range), other dims are used as is. Actions are **not squashed**: the
    returned ``action`` is the raw Gaussian sample, whose ``log_prob`` is exact. Clip it into the bounds only
    when stepping the env, with :meth:`Policy.clip_action` (keep the unclipped action for the learner).
    ``continuous_std="state_independent"`` learns one ``log_std`` per dim; ``"state_dependent"`` predicts it
    from the features (clamped to ``[-5, 2]``).

Legal-action masks
    ``action_masks`` (True = legal, width ``n`` for ``Discrete``, ``sum(nvec)`` otherwise) are applied to the
    logits: masked actions have probability exactly 0, are never sampled, and add nothing to the entropy (see
    :mod:`shoal.policies.distributions`).

Recurrence
    With ``recurrent=True`` an LSTM (one layer) follows the trunk. Rollouts call ``forward`` one step at a time
    (``obs [B, flat]``, ``done [B]``); training replays whole sequences (``obs [T, B, flat]``, ``done [T, B]``).
    ``done[t, b]`` is True when a new episode starts at step ``t`` in env ``b`` (the previous step was terminal
    or truncated): the state of that env is zeroed before step ``t``. Both give identical outputs.

Multi-agent options
    ``num_agent_ids > 0`` adds a learned embedding of ``agent_ids`` (slot index or agent type, int64 ``[B]``;
    negative ids, e.g. the ``-1`` of empty slots, are clamped to 0) to the actor's and critic's inputs.
    ``critic_input_size=C`` gives the critic its own MLP over a centralized input ``critic_obs`` float ``[B, C]``
    (e.g. :func:`centralized_input`: all slots of the env, dead slots zeroed, plus the slot mask), separate from
    the actor's local observation. ``critic_local_size=L`` makes it a :class:`ResidualCritic`: a local critic over
    the last ``L`` columns of ``critic_obs`` (the slot's own features and one-hots) plus the centralized MLP as a
    residual that starts at zero.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shoal.emulation.actions import ActionLayout
from shoal.emulation.base import action_mask_width
from shoal.emulation.layout import Layout, compile_layout
from shoal.errors import APIUsageError, CheckpointError, SpaceError
from shoal.policies.distributions import (
    ActionDistribution,
    DiagGaussian,
    HybridDistribution,
    MaskedCategorical,
    MultiCategorical,
)
from shoal.policies.encoders import ObservationEncoder, check_activation, encoder_kind, scale_leaf
from shoal.policies.unflatten import check_rows, leaf_tensors, torch_dtype

__all__ = [
    "ENCODING",
    "LSTM",
    "ActionHead",
    "Policy",
    "PolicyOutput",
    "centralized_input",
    "centralized_input_size",
    "check_saved_config",
    "float_features",
]

State = tuple[Tensor, Tensor]
#: Version of the default network's observation encoding, saved in :attr:`Policy.config`: 2 embeds integer Box
#: codes and scales small-range images by their high. Saved policies of another version are refused
#: (:func:`check_saved_config`).
ENCODING = 2
_STD_MODES = ("state_independent", "state_dependent")
_LOG_STD_RANGE = (-5.0, 2.0)


class PolicyOutput(NamedTuple):
    """What :meth:`Policy.forward` returns; leading dims ``[B]`` for a step, ``[T, B]`` for a sequence.

    Attributes:
        action: the sampled (or given) flat action: int64 ``[B]`` (Discrete), int64 ``[B, k]`` (MultiDiscrete),
            float32 ``[B, n]`` (Box, unclipped) or float32 ``[B, num_discrete + num_continuous]`` (hybrid).
        log_prob: float32 ``[B]`` log-probability of ``action``.
        entropy: float32 ``[B]`` entropy of the action distribution.
        value: float32 ``[B]`` critic value; None only for a centralized critic called without ``critic_obs``.
        state: the LSTM state after the last step (``(h, c)``, each ``[1, B, lstm_size]``) or None.
        logits: the masked logits (discrete kinds; illegal entries ``finfo.min``), the Gaussian mean in action units
            (continuous), or both concatenated ``[B, sum(nvec) + num_continuous]`` (hybrid).
    """

    action: Tensor
    log_prob: Tensor
    entropy: Tensor
    value: Tensor | None
    state: State | None
    logits: Tensor


def _linear(in_features: int, out_features: int, gain: float = math.sqrt(2)) -> nn.Linear:
    layer = nn.Linear(in_features, out_features)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class ActionHead(nn.Module):
    """Features ``[N, in_features]`` (+ masks ``[N, W]``) -> the action distribution of ``action_layout``.

    Args:
        action_layout: the flat action layout.
        in_features: width of the features.
        continuous_std: ``"state_independent"`` or ``"state_dependent"`` (Box and hybrid layouts).
    """

    def __init__(self, action_layout: ActionLayout, in_features: int,
                 continuous_std: str = "state_independent") -> None:
        super().__init__()
        if continuous_std not in _STD_MODES:
            raise APIUsageError(f"continuous_std={continuous_std!r}; expected one of {_STD_MODES}")
        self.kind = action_layout.kind
        self.mask_width = action_mask_width(action_layout)
        self.nvec = [int(n) for n in action_layout.nvec]
        self.num_continuous = int(action_layout.num_continuous)
        self.state_dependent_std = continuous_std == "state_dependent"
        if self.mask_width:
            self.logits = _linear(in_features, self.mask_width, gain=0.01)
        if self.kind in ("multi_discrete", "hybrid"):
            index, valid, inverse = MultiCategorical.gather_index(self.nvec)
            self.register_buffer("gather", index, persistent=False)
            self.register_buffer("valid", valid, persistent=False)
            self.register_buffer("inverse", inverse, persistent=False)
        if self.num_continuous:
            n = self.num_continuous
            self.mean = _linear(in_features, n, gain=0.01)
            if self.state_dependent_std:
                self.log_std = _linear(in_features, n, gain=0.01)
            else:
                self.log_std_param = nn.Parameter(torch.zeros(n))
            low, high = np.asarray(action_layout.low, np.float64), np.asarray(action_layout.high, np.float64)
            finite = np.isfinite(low) & np.isfinite(high) & (high - low <= 1e4) & (high > low)
            center = np.where(finite, (low + high) / 2, 0.0)
            half = np.where(finite, (high - low) / 2, 1.0)
            self.register_buffer("center", torch.as_tensor(center, dtype=torch.float32), persistent=False)
            self.register_buffer("half_range", torch.as_tensor(half, dtype=torch.float32), persistent=False)
            self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32), persistent=False)
            self.register_buffer("high", torch.as_tensor(high, dtype=torch.float32), persistent=False)

    def _gaussian(self, features: Tensor) -> DiagGaussian:
        mean = self.center + self.half_range * self.mean(features)
        log_std = self.log_std(features).clamp(*_LOG_STD_RANGE) if self.state_dependent_std else self.log_std_param
        return DiagGaussian(mean, self.half_range * log_std.exp())

    def _categorical(self, features: Tensor, masks: Tensor | None) -> MaskedCategorical | MultiCategorical:
        logits = self.logits(features)
        if self.kind == "discrete":
            return MaskedCategorical(logits, masks)
        return MultiCategorical(logits, self.nvec, masks, index=(self.gather, self.valid, self.inverse))

    def forward(self, features: Tensor, masks: Tensor | None = None) -> ActionDistribution:
        if self.kind == "continuous":
            return self._gaussian(features)
        if masks is not None and (masks.dim() != 2 or masks.shape[-1] != self.mask_width):
            raise APIUsageError(f"action_masks have shape {list(masks.shape)}; expected [batch, {self.mask_width}] "
                                f"(width {'n' if self.kind == 'discrete' else 'sum(nvec)'} = {self.mask_width})")
        discrete = self._categorical(features, masks)
        if self.kind == "hybrid":
            return HybridDistribution(discrete, self._gaussian(features))
        return discrete


class LSTM(nn.Module):
    """A one-layer LSTM with per-step state resets; parameters named and laid out as ``nn.LSTM``'s.

    Eager mode runs the fused ``torch.lstm`` kernel (one call for a whole sequence when no episode starts
    inside it, else one call per step); under ``torch.compile``/``torch.export`` it runs the same equations
    written with matmuls (Dynamo cannot trace ``nn.LSTM``), so compiled and exported graphs have no breaks.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.weight_ih_l0 = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh_l0 = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih_l0 = nn.Parameter(torch.zeros(4 * hidden_size))
        self.bias_hh_l0 = nn.Parameter(torch.zeros(4 * hidden_size))
        nn.init.orthogonal_(self.weight_ih_l0)
        nn.init.orthogonal_(self.weight_hh_l0)

    def forward(self, x: Tensor, state: State, keep: Tensor | None = None) -> tuple[Tensor, State]:
        """Run ``x [T, B, input_size]`` from ``state`` (``h, c`` each ``[1, B, hidden_size]``).

        ``keep [T, B, 1]`` (float 0/1): the state of env ``b`` is multiplied by ``keep[t, b]`` before step ``t``
        (0 where a new episode starts). Returns ``(out [T, B, hidden_size], (h, c))``.
        """
        h, c = state
        if torch.compiler.is_compiling():
            return self._unrolled(x, h, c, keep)
        params = [self.weight_ih_l0, self.weight_hh_l0, self.bias_ih_l0, self.bias_hh_l0]
        if keep is None or x.shape[0] == 1 or bool(keep[1:].all()):  # no reset inside: one fused call
            if keep is not None:
                h, c = h * keep[0], c * keep[0]
            out, h, c = torch.lstm(x, (h, c), params, True, 1, 0.0, self.training, False, False)
            return out, (h, c)
        outs = []
        for t in range(x.shape[0]):
            out, h, c = torch.lstm(x[t : t + 1], (h * keep[t], c * keep[t]), params, True, 1, 0.0, self.training,
                                   False, False)
            outs.append(out)
        return torch.cat(outs), (h, c)

    def _unrolled(self, x: Tensor, h: Tensor, c: Tensor, keep: Tensor | None) -> tuple[Tensor, State]:
        gates_x = F.linear(x, self.weight_ih_l0, self.bias_ih_l0)  # [T, B, 4H]: every step's input at once
        h, c = h[0], c[0]
        outs = []
        for t in range(x.shape[0]):
            if keep is not None:
                h, c = h * keep[t], c * keep[t]
            i, f, g, o = (gates_x[t] + F.linear(h, self.weight_hh_l0, self.bias_hh_l0)).chunk(4, -1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        return torch.stack(outs), (h.unsqueeze(0), c.unsqueeze(0))


class ResidualCritic(nn.Module):
    """A local critic plus a centralized residual: ``value = w . [local(x_local), central(x)] + b``.

    The local MLP reads the last ``local_size`` columns of the critic input (a slot's own features and one-hots in
    :func:`~shoal.train.core.centralized.critic_input`); the central MLP reads the whole row (plus the agent-id
    embedding). One output layer reads both hidden vectors, and its weights over the central one start at zero:
    training starts from a local critic and the global input joins as it pays off. On mpe2's simple_spread, whose
    local observations already hold every relative position, a centralized critic alone fit worse early and trailed
    a local one (README, MAPPO section). One output layer keeps PopArt exact (it rescales :attr:`output`).

    Args:
        input_size: width of the full input row ``x`` (``critic_input_size`` + the agent-id embedding, if any).
        local_size: width of the local part: the ``local_size`` columns just before the appended embedding,
            ``x[:, input_size - embedding - local_size : input_size - embedding]``.
        hidden_size: width of both MLPs (two layers each).
        embedding: width of the appended agent-id embedding (0: none); the local MLP does not read it.
        act: the activation module class.

    Raises:
        APIUsageError: the local columns do not fit before the embedding.
    """

    def __init__(self, input_size: int, local_size: int, hidden_size: int, embedding: int,
                 act: type[nn.Module]) -> None:
        super().__init__()
        if embedding < 0 or not 1 <= local_size <= input_size - embedding:
            raise APIUsageError(f"ResidualCritic: local_size={local_size} must be between 1 and input_size - "
                                f"embedding = {input_size} - {embedding}")
        self.local_size = local_size
        self._local_end = input_size - embedding
        self._local_start = self._local_end - local_size
        self.local = nn.Sequential(_linear(local_size, hidden_size), act(), _linear(hidden_size, hidden_size), act())
        self.central = nn.Sequential(_linear(input_size, hidden_size), act(), _linear(hidden_size, hidden_size),
                                     act())
        self.output = _linear(2 * hidden_size, 1, gain=1.0)
        with torch.no_grad():
            self.output.weight[:, hidden_size:] = 0.0

    def forward(self, x: Tensor) -> Tensor:
        """float32 ``x [N, input_size]`` -> values ``[N, 1]``."""
        local = self.local(x[:, self._local_start:self._local_end])
        return self.output(torch.cat([local, self.central(x)], -1))


class Policy(nn.Module):
    """The default actor-critic policy for any emulated env (see the module docstring for the design).

    Args:
        obs_layout: the observation :class:`~shoal.emulation.layout.Layout` (or a space, compiled on the fly).
        action_layout: the :class:`~shoal.emulation.actions.ActionLayout` (or a native action space).
        hidden_size: width of the trunk, of image features and (at most) of vector-leaf features.
        num_layers: ``Linear`` + activation layers in the shared trunk after the leaf encoders (>= 1).
        embedding_dim: width of one embedding vector for Discrete/MultiDiscrete/Text leaves.
        recurrent: add an LSTM after the trunk.
        lstm_size: LSTM hidden size.
        num_agent_ids: number of distinct agent ids (slots or agent types) to embed; 0 disables.
        agent_id_embedding: width of the agent-id embedding.
        critic_input_size: width of a centralized critic input; None: the value head reads the shared features.
        critic_local_size: with ``critic_input_size``, the critic is a :class:`ResidualCritic` whose local part
            reads the last ``critic_local_size`` columns of ``critic_obs``; None: one MLP over the whole row.
        separate_critic: give the critic its own encoder and trunk (feed-forward policies without
            ``critic_input_size``). Shared features must grow with the scale of the returns to fit them, which
            scales the actor's logits too (entropy collapses without any policy gradient); False shares them.
            None (default): separate unless an observation leaf is an image or a board (a second CNN doubles the
            cost of every step; image and board policies share theirs, as CleanRL's Atari PPO does: a connect-four
            league, ``benchmarks/league.py connect_four``, made 2.9M steps in 30 minutes with the shared board CNN,
            1.8-2.0M with two, at similar strength).
        continuous_std: ``"state_independent"`` or ``"state_dependent"`` Gaussian std.
        encoding: the observation encoding's version; only :data:`ENCODING` (saved in :attr:`config`, so a policy
            saved by another version is refused on loading).
        board_encoder: encode board-game planes (connect four's ``(6, 7, 2)`` int8 board...) with the convolutional
            :class:`~shoal.policies.encoders.BoardEncoder`; False: as flat vectors (policies saved before it existed).
        activation: ``"relu"`` (default) or ``"tanh"``: the activation of the vector-leaf encoders and of the
            trunks (actor, critic, centralized critic); image and board CNNs keep ReLU. Tanh (SB3's default)
            bounds every feature; on MountainCar-v0 it let PPO find the goal where ReLU did not.
        obs_norm: normalize float Box observation leaves by the running mean and variance of the observations
            trained on (clipped to +-10), as SB3's ``VecNormalize`` does, instead of feeding them at their own
            scale; the statistics are buffers of the policy (:mod:`shoal.policies.obs_stats`), updated by the
            trainer after each update (:meth:`update_observation_stats`).
        device: where to put the parameters.

    Raises:
        SpaceError: a leaf the encoders cannot handle (the message names its path and shape).
        APIUsageError: bad option values.
    """

    def __init__(self, obs_layout: Layout | Any, action_layout: ActionLayout | Any, *, hidden_size: int = 128,
                 num_layers: int = 1, embedding_dim: int = 16, recurrent: bool = False, lstm_size: int = 128,
                 num_agent_ids: int = 0, agent_id_embedding: int = 16, critic_input_size: int | None = None,
                 critic_local_size: int | None = None, continuous_std: str = "state_independent",
                 separate_critic: bool | None = None,
                 encoding: int = ENCODING, board_encoder: bool = True, activation: str = "relu",
                 obs_norm: bool = False, device: torch.device | str | None = None) -> None:
        super().__init__()
        check_activation(activation)
        if encoding != ENCODING:
            raise APIUsageError(f"encoding={encoding!r}: this shoal builds only the observation encoding {ENCODING} "
                                "(see shoal.policies.policy.ENCODING)")
        if hidden_size < 1 or num_layers < 1 or lstm_size < 1 or embedding_dim < 1 or num_agent_ids < 0:
            raise APIUsageError(f"hidden_size={hidden_size}, num_layers={num_layers}, lstm_size={lstm_size}, "
                                f"embedding_dim={embedding_dim} must be >= 1 and num_agent_ids={num_agent_ids} >= 0")
        if critic_input_size is not None and critic_input_size < 1:
            raise APIUsageError(f"critic_input_size={critic_input_size} must be >= 1 or None")
        if critic_local_size is not None and (critic_input_size is None
                                              or not 1 <= critic_local_size <= critic_input_size):
            raise APIUsageError(f"critic_local_size={critic_local_size} needs a critic_input_size (got "
                                f"{critic_input_size}) and must be between 1 and it")
        self.obs_layout = compile_layout(obs_layout)
        self.action_layout = action_layout if isinstance(action_layout, ActionLayout) else ActionLayout(action_layout)
        # plain copies of what forward() reads, so compiled graphs never touch the layouts' cached properties
        self._flat_size = int(self.obs_layout.flat_size)
        self._flat_dtype = torch_dtype(self.obs_layout.flat_dtype)
        self._action_shape = tuple(self.action_layout.flat_shape)
        self._action_kind = self.action_layout.kind
        self._num_discrete = int(self.action_layout.num_discrete)
        if separate_critic is None:
            separate_critic = not any(encoder_kind(leaf, board_encoder) in ("image", "board")
                                      for leaf in self.obs_layout.leaves)
        self.config: dict[str, Any] = dict(
            hidden_size=hidden_size, num_layers=num_layers, embedding_dim=embedding_dim, recurrent=recurrent,
            lstm_size=lstm_size, num_agent_ids=num_agent_ids, agent_id_embedding=agent_id_embedding,
            critic_input_size=critic_input_size, continuous_std=continuous_std, separate_critic=separate_critic,
            encoding=encoding,
            board_encoder=board_encoder,
        )
        if activation != "relu":  # saved only when set: configs saved before the option rebuild with ReLU
            self.config["activation"] = activation
        if obs_norm:  # likewise: configs saved before the option rebuild without statistics
            self.config["obs_norm"] = True
        if critic_local_size is not None:  # likewise: they rebuild a single critic MLP
            self.config["critic_local_size"] = critic_local_size
        act = nn.Tanh if activation == "tanh" else nn.ReLU
        self.encoder = ObservationEncoder(self.obs_layout, hidden_size=hidden_size, embedding_dim=embedding_dim,
                                          boards=board_encoder, activation=activation, obs_norm=obs_norm)
        self.num_agent_ids = num_agent_ids
        width = self.encoder.out_features
        if num_agent_ids:
            self.agent_embedding = nn.Embedding(num_agent_ids, agent_id_embedding)
            width += agent_id_embedding
        layers: list[nn.Module] = []
        for _ in range(num_layers):
            layers += [_linear(width, hidden_size), act()]
            width = hidden_size
        self.trunk = nn.Sequential(*layers)
        self.lstm: LSTM | None = None
        if recurrent:
            self.lstm = LSTM(hidden_size, lstm_size)
            width = lstm_size
        self.head = ActionHead(self.action_layout, width, continuous_std)
        self.critic_input_size = critic_input_size
        self.separate_critic = separate_critic and critic_input_size is None and not recurrent
        if self.separate_critic:
            self.critic_encoder = ObservationEncoder(self.obs_layout, hidden_size=hidden_size,
                                                     embedding_dim=embedding_dim, boards=board_encoder,
                                                     activation=activation, obs_norm=obs_norm)
            width = self.critic_encoder.out_features + (agent_id_embedding if num_agent_ids else 0)
            layers = []
            for _ in range(num_layers):
                layers += [_linear(width, hidden_size), act()]
                width = hidden_size
            self.critic_trunk = nn.Sequential(*layers)
        if critic_input_size is None:
            self.value_head = _linear(width, 1, gain=1.0)
        elif critic_local_size is not None:
            extra = agent_id_embedding if num_agent_ids else 0
            self.critic = ResidualCritic(critic_input_size + extra, critic_local_size, hidden_size, extra, act)
        else:
            extra = agent_id_embedding if num_agent_ids else 0
            self.critic = nn.Sequential(
                _linear(critic_input_size + extra, hidden_size), act(),
                _linear(hidden_size, hidden_size), act(),
                _linear(hidden_size, 1, gain=1.0),
            )
        self.to(device)

    @classmethod
    def from_env(cls, env: Any, **kwargs: Any) -> Policy:
        """Build a policy for ``env`` (an emulator or vector env with ``obs_layout`` and ``action_layout``)."""
        return cls(*env_layouts(env), **kwargs)

    # ----------------------------------------------------------------------------------------------------------
    # properties and state
    # ----------------------------------------------------------------------------------------------------------

    @property
    def is_recurrent(self) -> bool:
        """True when the policy has an LSTM (and so a state)."""
        return self.lstm is not None

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return next(self.parameters()).device

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State | None:
        """Zero LSTM state ``(h, c)``, each float32 ``[1, batch_size, lstm_size]``; None if not recurrent."""
        if self.lstm is None:
            return None
        device = self.device if device is None else device
        zeros = torch.zeros(1, batch_size, self.lstm.hidden_size, device=device)
        return zeros, zeros.clone()

    # ----------------------------------------------------------------------------------------------------------
    # forward
    # ----------------------------------------------------------------------------------------------------------

    def forward(self, obs: Tensor, state: State | None = None, *, done: Tensor | None = None,
                action_masks: Tensor | None = None, action: Tensor | None = None,
                agent_ids: Tensor | None = None, critic_obs: Tensor | None = None,
                deterministic: bool = False) -> PolicyOutput:
        """Sample (or evaluate) actions and values for a step ``[B]`` or a sequence ``[T, B]``.

        Args:
            obs: flat rows ``[B, flat_size]`` (``[T, B, flat_size]`` for a sequence; non-recurrent policies accept
                any leading dims) of the layout's flat dtype, e.g. ``uint8`` byte rows for a mixed layout.
            state: None (zeros) or the ``(h, c)`` from :meth:`initial_state` / a previous call (recurrent only).
            done: bool ``[B]`` / ``[T, B]``: True where a new episode starts at that step (state zeroed first).
            action_masks: bool ``[B, W]`` / ``[T, B, W]`` legal actions (True = legal).
            action: flat actions ``[B, *flat_action_shape]`` to evaluate instead of sampling.
            agent_ids: int64 ``[B]`` / ``[T, B]`` (required when ``num_agent_ids > 0``).
            critic_obs: float ``[B, critic_input_size]`` / ``[T, B, critic_input_size]`` centralized critic input.
            deterministic: take the most likely action (the mean for Box) instead of sampling.

        Returns:
            :class:`PolicyOutput` with leading dims of ``obs`` minus its last.

        Raises:
            SpaceError: ``obs`` has the wrong width or dtype. APIUsageError: other inputs have the wrong shape.
        """
        lead, features, state = self._actor_features(obs, state, done, agent_ids)
        dist = self.head(features, self._flat(action_masks, lead, "action_masks", self.head.mask_width))
        if action is None:
            action = dist.mode() if deterministic else dist.sample()
        else:
            action = self._flat_action(action, lead)
        log_prob = dist.log_prob(action)
        entropy = dist.entropy()
        if self.separate_critic:
            value = self.value_head(self._critic_features(obs, agent_ids, lead)).squeeze(-1)
        else:
            value = self._value(features, critic_obs, agent_ids, lead)
        shape_action = (*lead, *self._action_shape)
        return PolicyOutput(
            action=action.reshape(shape_action),
            log_prob=log_prob.reshape(lead),
            entropy=entropy.reshape(lead),
            value=None if value is None else value.reshape(lead),
            state=state,
            logits=dist.logits.reshape(*lead, dist.logits.shape[-1]),
        )

    def actor(self, obs: Tensor, state: State | None = None, *, done: Tensor | None = None,
              action_masks: Tensor | None = None, agent_ids: Tensor | None = None) -> tuple[Tensor, State | None]:
        """The actor alone: ``(logits, state)`` with ``logits`` as in :class:`PolicyOutput` (what ONNX exports)."""
        lead, features, state = self._actor_features(obs, state, done, agent_ids)
        dist = self.head(features, self._flat(action_masks, lead, "action_masks", self.head.mask_width))
        return dist.logits.reshape(*lead, dist.logits.shape[-1]), state

    def value(self, obs: Tensor | None, state: State | None = None, *, done: Tensor | None = None,
              agent_ids: Tensor | None = None, critic_obs: Tensor | None = None) -> Tensor:
        """float32 critic values with the leading dims of ``obs`` (or of ``critic_obs`` for a centralized critic,
        which does not read ``obs``: pass None)."""
        if self.critic_input_size is not None:
            if critic_obs is None:
                raise APIUsageError("this policy has a centralized critic: pass critic_obs "
                                    f"[batch, {self.critic_input_size}]")
            lead = tuple(critic_obs.shape[:-1])
            return self._value(None, critic_obs, agent_ids, lead).reshape(lead)
        if self.separate_critic:
            if not isinstance(obs, Tensor) or obs.dim() == 0 or obs.shape[-1] != self._flat_size or (
                obs.dtype != self._flat_dtype
            ):
                check_rows(self.obs_layout, obs, "observation")
            lead = tuple(obs.shape[:-1])
            return self.value_head(self._critic_features(obs, agent_ids, lead)).reshape(lead)
        lead, features, _ = self._actor_features(obs, state, done, agent_ids)
        return self.value_head(features).reshape(lead)

    def observation_moments(self, obs: Tensor) -> Tensor:
        """float64 ``[K]``: moments of flat observation rows ``obs [N, flat_size]`` for the running observation
        statistics (``obs_norm``; empty without it). Moments of several batches or learners add up; pass their
        sum to :meth:`update_observation_stats`."""
        return self.encoder.observation_moments(obs.reshape(-1, self._flat_size))

    def update_observation_stats(self, moments: Tensor) -> None:
        """Fold summed :meth:`observation_moments` into the statistics of the actor's (and a separate critic's)
        encoder. Call it between rollouts only: acting and the update on a rollout must see the same
        statistics."""
        self.encoder.update_observation_stats(moments)
        if self.separate_critic:
            self.critic_encoder.update_observation_stats(moments)

    def clip_action(self, action: Tensor) -> Tensor:
        """Clip the continuous entries of flat actions into the action space's bounds (for stepping the env).

        Discrete kinds are returned as is. Keep the unclipped action for the learner (its log-prob is exact).
        """
        if not self.head.num_continuous:
            return action
        if self._action_kind == "continuous":
            return torch.clamp(action, self.head.low, self.head.high)
        k = self._num_discrete
        return torch.cat([action[..., :k], torch.clamp(action[..., k:], self.head.low, self.head.high)], -1)

    # ----------------------------------------------------------------------------------------------------------
    # pieces
    # ----------------------------------------------------------------------------------------------------------

    def encode(self, obs: Tensor, agent_ids: Tensor | None = None) -> Tensor:
        """Flat rows ``[N, flat_size]`` (+ ids ``[N]``) -> trunk features float32 ``[N, hidden_size]``."""
        features = self.encoder(obs)
        if self.num_agent_ids:
            features = torch.cat([features, self._agent_features(agent_ids, (obs.shape[0],))], -1)
        return self.trunk(features)

    def encode_critic(self, obs: Tensor, agent_ids: Tensor | None = None) -> Tensor:
        """Flat rows ``[N, flat_size]`` (+ ids ``[N]``) -> the features float32 ``[N, hidden_size]`` the value head
        reads: the separate critic's, or the shared trunk's (:meth:`encode`)."""
        if not self.separate_critic:
            return self.encode(obs, agent_ids)
        return self._critic_features(obs, agent_ids, (obs.shape[0],))

    def _critic_features(self, obs: Tensor, agent_ids: Tensor | None, lead: tuple[int, ...]) -> Tensor:
        """The separate critic's trunk features ``[N, hidden_size]`` of flat rows ``obs [*lead, flat_size]``."""
        features = self.critic_encoder(obs.reshape(math.prod(lead), self._flat_size))
        if self.num_agent_ids:
            features = torch.cat([features, self._agent_features(agent_ids, lead)], -1)
        return self.critic_trunk(features)

    def _agent_features(self, agent_ids: Tensor | None, lead: tuple[int, ...]) -> Tensor:
        if agent_ids is None:
            raise APIUsageError(f"this policy embeds agent ids (num_agent_ids={self.num_agent_ids}): pass "
                                f"agent_ids int64 {list(lead)}")
        ids = self._flat(agent_ids, lead, "agent_ids", None)
        return self.agent_embedding(ids.long().clamp(0, self.num_agent_ids - 1))

    def _actor_features(self, obs: Tensor, state: State | None, done: Tensor | None,
                        agent_ids: Tensor | None) -> tuple[tuple[int, ...], Tensor, State | None]:
        if not isinstance(obs, Tensor) or obs.dim() == 0 or obs.shape[-1] != self._flat_size or (
            obs.dtype != self._flat_dtype
        ):
            check_rows(self.obs_layout, obs, "observation")  # raises, naming the leaves
        lead = tuple(obs.shape[:-1])
        if self.lstm is not None and len(lead) not in (1, 2):
            raise APIUsageError(f"a recurrent policy takes obs [B, {self._flat_size}] (one step) or "
                                f"[T, B, {self._flat_size}] (a sequence); got {list(obs.shape)}")
        n = math.prod(lead)
        features = self.encoder(obs.reshape(n, self._flat_size))
        if self.num_agent_ids:
            features = torch.cat([features, self._agent_features(agent_ids, lead)], -1)
        features = self.trunk(features)
        if self.lstm is None:
            return lead, features, None
        features, state = self._recur(features, lead, state, done)
        return lead, features, state

    def _recur(self, features: Tensor, lead: tuple[int, ...], state: State | None,
               done: Tensor | None) -> tuple[Tensor, State]:
        assert self.lstm is not None
        steps, batch = (1, lead[0]) if len(lead) == 1 else lead
        x = features.reshape(steps, batch, features.shape[-1])
        if state is None:
            h = c = x.new_zeros(1, batch, self.lstm.hidden_size)
        else:
            h, c = state
            expected = (1, batch, self.lstm.hidden_size)
            if tuple(h.shape) != expected or tuple(c.shape) != expected:
                raise APIUsageError(f"LSTM state has shapes {list(h.shape)}, {list(c.shape)}; expected {list(expected)}"
                                    " each (use policy.initial_state(batch_size))")
        keep = None
        if done is not None:
            if tuple(done.shape) != lead:
                raise APIUsageError(f"done has shape {list(done.shape)}; expected {list(lead)}")
            keep = (~done.bool()).reshape(steps, batch, 1).to(x.dtype)
        out, state = self.lstm(x, (h, c), keep)
        return out.reshape(steps * batch, -1), state

    def _value(self, features: Tensor | None, critic_obs: Tensor | None, agent_ids: Tensor | None,
               lead: tuple[int, ...]) -> Tensor | None:
        if self.critic_input_size is None:
            assert features is not None
            return self.value_head(features).squeeze(-1)
        if critic_obs is None:
            return None
        x = self._flat(critic_obs, lead, "critic_obs", self.critic_input_size).to(torch.float32)
        if self.num_agent_ids:
            x = torch.cat([x, self._agent_features(agent_ids, lead)], -1)
        return self.critic(x).squeeze(-1)

    @staticmethod
    def _flat(x: Tensor | None, lead: tuple[int, ...], name: str, width: int | None) -> Tensor | None:
        """Collapse ``x [*lead(, width)]`` to ``[N(, width)]``, checking its shape."""
        if x is None:
            return None
        expected = lead if width is None else (*lead, width)
        if tuple(x.shape) != expected:
            raise APIUsageError(f"{name} has shape {list(x.shape)}; expected {list(expected)}")
        n = math.prod(lead)
        return x.reshape(n) if width is None else x.reshape(n, width)

    def _flat_action(self, action: Tensor, lead: tuple[int, ...]) -> Tensor:
        flat_shape = self._action_shape
        expected = (*lead, *flat_shape)
        if tuple(action.shape) != expected:
            raise APIUsageError(f"action has shape {list(action.shape)}; expected {list(expected)} "
                                f"for {self.action_layout.flat_space!r}")
        return action.reshape(math.prod(lead), *flat_shape)


# --------------------------------------------------------------------------------------------------------------
# Helpers for baselines and centralized critics
# --------------------------------------------------------------------------------------------------------------


def env_layouts(env: Any) -> tuple[Layout, ActionLayout]:
    """``(obs_layout, action_layout)`` of an emulator or shoal vector env; a clear error for anything else."""
    missing = [name for name in ("obs_layout", "action_layout") if not hasattr(env, name)]
    if missing:
        raise APIUsageError(f"{type(env).__name__} has no {' or '.join(missing)}; pass an emulated env "
                            "(shoal.emulate(env)) or a shoal vector env (shoal.make(...))")
    return env.obs_layout, env.action_layout


def float_features(layout: Layout, obs: Tensor, *, scaled: bool = False) -> Tensor:
    """Every leaf of flat rows ``[*batch, flat_size]`` cast to float32 and concatenated: ``[*batch, F]``.

    ``F`` is the total number of leaf elements. With ``scaled=True`` each leaf is scaled as the vector encoders
    scale it (:func:`~shoal.policies.encoders.leaf_scaling`: bounded leaves into ``[-1, 1]``, others symlog).
    A copy; handy for centralized critics and plain-MLP baselines.
    """
    check_rows(layout, obs, "observation")
    lead = tuple(obs.shape[:-1])
    leaves = leaf_tensors(layout, obs)
    if scaled:
        parts = [scale_leaf(leaf, x) for leaf, x in zip(layout.leaves, leaves, strict=True)]
    else:
        parts = [x.reshape(*lead, -1).to(torch.float32) for x in leaves]
    return parts[0] if len(parts) == 1 else torch.cat(parts, -1)


def centralized_input(layout: Layout, obs: Tensor, masks: Tensor) -> Tensor:
    """Centralized critic input: each slot sees every slot of its env (dead slots zeroed) plus the slot mask.

    Args:
        layout: the observation layout.
        obs: flat rows ``[E, N, flat_size]`` for ``E`` envs of ``N`` slots.
        masks: bool ``[E, N]``, True for live slots.

    Returns:
        float32 ``[E, N, N * F + N]`` (``F`` = elements per row, scaled as in :func:`float_features`); the same row for
        every slot of an env (tell slots apart with ``num_agent_ids``). Its width is the ``critic_input_size``.
    """
    if obs.dim() != 3 or tuple(masks.shape) != tuple(obs.shape[:2]):
        raise APIUsageError(f"centralized_input takes obs [E, N, flat] and masks [E, N]; got {list(obs.shape)} "
                            f"and {list(masks.shape)}")
    if masks.dtype != torch.bool:
        raise SpaceError(f"masks must be bool, got {masks.dtype}")
    envs, slots = obs.shape[:2]
    feats = float_features(layout, obs, scaled=True) * masks.unsqueeze(-1)
    joint = torch.cat([feats.reshape(envs, -1), masks.to(torch.float32)], -1)
    return joint.unsqueeze(1).expand(envs, slots, joint.shape[-1])


def centralized_input_size(layout: Layout, num_slots: int) -> int:
    """Width of :func:`centralized_input` for ``num_slots`` slots: ``num_slots * (elements per row + 1)``."""
    return num_slots * (sum(leaf.size for leaf in layout.leaves) + 1)


def check_saved_config(config: dict[str, Any], source: str) -> dict[str, Any]:
    """The keyword arguments that rebuild the policy of a saved :attr:`Policy.config`.

    Refuses a config from before the default network last changed (its ``encoding`` is not :data:`ENCODING`): its
    weights would load into a network that encodes observations differently, and compute something else without an
    error (or fail with a shape mismatch). A config saved before the board encoder existed encodes boards as
    vectors.
    """
    if config and config.get("encoding") != ENCODING:
        raise CheckpointError(
            f"{source} holds a policy saved by an older shoal, before the default network changed (float Box "
            "inputs at their own scale, a full-width first layer, a separate critic; integer Box codes embedded "
            "and small-range images scaled by their high); this version cannot rebuild it exactly: retrain it, "
            "or evaluate it with the shoal version that trained it"
        )
    return {"board_encoder": False, **config} if config else dict(config)
