"""The Decision Transformer: a causal transformer over (return-to-go, observation, action) tokens.

Offline RL as sequence modelling (Chen et al., 2021): the model reads the last ``K`` steps of an episode as
``3K`` tokens ``R_1, s_1, a_1, ..., R_K, s_K, a_K`` (``R_t`` the return still to collect from step ``t``) and
predicts each action ``a_t`` from the output at its observation token ``s_t``, which a causal mask lets see only
``R_{<=t}``, ``s_{<=t}`` and ``a_{<t}``. Conditioned at evaluation on a high target return, it imitates the
behaviour that collected such returns in its data.

Tokens
    * return-to-go: ``Linear(1, d)`` of ``R_t / return_scale``;
    * observation: the flat rows through the default policy's per-leaf encoders
      (:class:`~shoal.policies.encoders.ObservationEncoder`: nested, mixed-dtype, image and grid observations), then
      ``Linear(., d)``;
    * action: ``Embedding(n, d)`` for ``Discrete``; ``Linear(A, d)`` of the action in ``[-1, 1]`` units for ``Box``;
    * plus a learned embedding of the step's timestep in its episode (clamped to ``max_timestep``) on all three.

Heads
    ``Discrete``: logits over ``n`` actions (legal-action masks applied when acting and in the loss). ``Box`` (finite
    bounds): a deterministic ``tanh`` output in ``[-1, 1]`` mapped onto the bounds, trained by mean squared error.
    ``MultiDiscrete`` and hybrid action spaces are refused (an :class:`~shoal.errors.APIUsageError` says so).

Padding
    ``valid [B, K]`` marks the real steps of a window; padded steps (before an episode's first step) are never
    attended to by real tokens, so a window's predictions do not depend on what padding holds.

Acting
    :meth:`DecisionTransformer.initial_context` gives a :class:`TokenContext`: each vector row's last ``K``
    (return-to-go, observation, action, timestep) entries, reset where an episode starts, its return-to-go started
    at the target return and lowered by every reward received.
    :class:`~shoal.train.acting.RowActor` keeps one for a sequence policy (``is_sequence``), as it keeps the LSTM
    state of a recurrent one.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from shoal.emulation.actions import ActionLayout
from shoal.emulation.base import action_mask_width
from shoal.emulation.layout import Layout, compile_layout
from shoal.errors import APIUsageError, SpaceError
from shoal.policies.distributions import masked_logits, register_squash_bounds
from shoal.policies.encoders import ObservationEncoder
from shoal.policies.policy import env_layouts
from shoal.policies.unflatten import torch_dtype

__all__ = ["DecisionTransformer", "TokenContext"]

_TOKENS_PER_STEP = 3


class DecisionTransformer(nn.Module):
    """A return-conditioned causal transformer policy (see the module docstring).

    Args:
        obs_layout: the observation :class:`~shoal.emulation.layout.Layout` (or a space).
        action_layout: the :class:`~shoal.emulation.actions.ActionLayout` (or a native action space): ``Discrete``,
            or ``Box`` with finite bounds.
        context_length: ``K``, the steps the model reads (``3K`` tokens).
        embed_dim: width ``d`` of every token.
        num_layers, num_heads: transformer blocks and attention heads (``embed_dim % num_heads == 0``).
        dropout: dropout inside the transformer and on the token embeddings (training only).
        max_timestep: timesteps beyond it share its embedding.
        hidden_size, embedding_dim: widths of the observation encoder (as :class:`~shoal.policies.Policy`'s).
        return_scale: returns-to-go are divided by it before their embedding (so that they are about 1).
        target_return: the return to condition on when acting without one given (the training data's best
            episode return when trained by shoal); None: acting must be given one.
        device: where to put the parameters.

    Raises:
        APIUsageError: MultiDiscrete or hybrid actions, unbounded Box actions, bad sizes.
        SpaceError: an observation leaf the encoders cannot handle.
    """

    #: acting keeps a per-row :class:`TokenContext` (see :class:`~shoal.train.acting.RowActor`)
    is_sequence = True
    is_recurrent = False
    num_agent_ids = 0

    def __init__(self, obs_layout: Layout | Any, action_layout: ActionLayout | Any, *, context_length: int = 20,
                 embed_dim: int = 128, num_layers: int = 3, num_heads: int = 1, dropout: float = 0.1,
                 max_timestep: int = 4096, hidden_size: int = 128, embedding_dim: int = 16,
                 return_scale: float = 1.0, target_return: float | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        for name, value in (("context_length", context_length), ("embed_dim", embed_dim),
                            ("num_layers", num_layers), ("num_heads", num_heads), ("max_timestep", max_timestep),
                            ("hidden_size", hidden_size), ("embedding_dim", embedding_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise APIUsageError(f"DecisionTransformer {name} must be a positive int, got {value!r}")
        if embed_dim % num_heads:
            raise APIUsageError(f"DecisionTransformer embed_dim={embed_dim} must be a multiple of "
                                f"num_heads={num_heads}")
        if not 0.0 <= dropout < 1.0:
            raise APIUsageError(f"DecisionTransformer dropout must be in [0, 1), got {dropout!r}")
        if not (math.isfinite(return_scale) and return_scale > 0):
            raise APIUsageError(f"DecisionTransformer return_scale must be a positive number, got {return_scale!r}")
        if target_return is not None and not math.isfinite(target_return):
            raise APIUsageError(f"DecisionTransformer target_return must be finite or None, got {target_return!r}")
        self.obs_layout = compile_layout(obs_layout)
        self.action_layout = action_layout if isinstance(action_layout, ActionLayout) else ActionLayout(action_layout)
        kind = self.action_layout.kind
        if kind not in ("discrete", "continuous"):
            raise APIUsageError(
                f"the Decision Transformer predicts Discrete or Box actions; this env's actions are {kind} "
                f"({self.action_layout.space}). Train it with --algo bc or an online algorithm (--algo ppo)"
            )
        self.kind = kind
        self.config: dict[str, Any] = dict(
            context_length=context_length, embed_dim=embed_dim, num_layers=num_layers, num_heads=num_heads,
            dropout=dropout, max_timestep=max_timestep, hidden_size=hidden_size, embedding_dim=embedding_dim,
            return_scale=float(return_scale), target_return=None if target_return is None else float(target_return),
        )
        self.context_length = context_length
        self.num_heads = num_heads
        self.max_timestep = max_timestep
        self.return_scale = float(return_scale)
        self.target_return = self.config["target_return"]
        self._flat_size = int(self.obs_layout.flat_size)
        self._flat_dtype = torch_dtype(self.obs_layout.flat_dtype)
        self.action_shape: tuple[int, ...] = tuple(self.action_layout.flat_shape)

        self.encoder = ObservationEncoder(self.obs_layout, hidden_size=hidden_size, embedding_dim=embedding_dim)
        self.embed_obs = nn.Linear(self.encoder.out_features, embed_dim)
        self.embed_return = nn.Linear(1, embed_dim)
        self.embed_timestep = nn.Embedding(max_timestep + 1, embed_dim)
        if kind == "discrete":
            self.num_actions = int(action_mask_width(self.action_layout))
            self.embed_action: nn.Module = nn.Embedding(self.num_actions, embed_dim)
            self.head = nn.Linear(embed_dim, self.num_actions)
        else:
            register_squash_bounds(self, self.action_layout, "the Decision Transformer")
            self.num_actions = int(self.action_layout.num_continuous)
            self.embed_action = nn.Linear(self.num_actions, embed_dim)
            self.head = nn.Linear(embed_dim, self.num_actions)
        self.embed_norm = nn.LayerNorm(embed_dim)
        self.embed_dropout = nn.Dropout(dropout)
        block = nn.TransformerEncoderLayer(embed_dim, num_heads, dim_feedforward=4 * embed_dim, dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(block, num_layers, norm=nn.LayerNorm(embed_dim),
                                                 enable_nested_tensor=False)
        length = _TOKENS_PER_STEP * context_length
        causal = torch.ones(length, length, dtype=torch.bool).triu(1)
        self.register_buffer("causal", causal, persistent=False)
        self.to(device)

    @classmethod
    def from_env(cls, env: Any, **kwargs: Any) -> DecisionTransformer:
        """Build the model for ``env`` (an emulator or vector env with ``obs_layout`` and ``action_layout``)."""
        return cls(*env_layouts(env), **kwargs)

    @property
    def device(self) -> torch.device:
        return self.embed_return.weight.device

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> None:
        """No recurrent state: the per-row memory is a :class:`TokenContext` (:meth:`initial_context`)."""
        return None

    def initial_context(self, num_rows: int, device: torch.device | str | None = None,
                        target_return: float | None = None) -> TokenContext:
        """An empty :class:`TokenContext` for ``num_rows`` vector rows, conditioned on ``target_return`` (default:
        the model's own ``target_return``).

        Raises:
            APIUsageError: neither gives a target return.
        """
        target = self.target_return if target_return is None else target_return
        if target is None or not math.isfinite(target):
            raise APIUsageError(
                "a Decision Transformer acts towards a target return, and none was given: pass --target-return "
                "(shoal eval, shoal train) or target_return=... (evaluate, RowActor), e.g. the best episode return "
                f"of its training data; got {target!r}"
            )
        return TokenContext(self, num_rows, float(target), self.device if device is None else device)

    # ---- units -------------------------------------------------------------------------------------------------

    def to_unit_range(self, action: Tensor) -> Tensor:
        """Box actions in the space's units ``[..., A]`` -> float32 ``[-1, 1]`` units (clamped)."""
        return ((action.to(torch.float32) - self.center) / self.half_range).clamp(-1.0, 1.0)

    def to_env_units(self, unit: Tensor) -> Tensor:
        """Box actions in ``[-1, 1]`` units -> the space's units."""
        return self.center + self.half_range * unit

    def clip_action(self, action: Tensor) -> Tensor:
        """Actions come inside the bounds already (discrete: indices; Box: squashed); clamp away float rounding."""
        if self.kind == "continuous":
            return torch.max(torch.min(action, self.center + self.half_range), self.center - self.half_range)
        return action

    # ---- the sequence model ------------------------------------------------------------------------------------

    def forward(self, obs: Tensor, actions: Tensor, returns_to_go: Tensor, timesteps: Tensor,
                valid: Tensor | None = None) -> Tensor:
        """Predict the action of every step of ``B`` windows of ``K`` steps (``K <= context_length``).

        Args:
            obs: flat observation rows ``[B, K, flat_size]`` of the layout's flat dtype.
            actions: the actions taken, ``int64 [B, K]`` (Discrete) or float ``[B, K, A]`` in the space's units
                (Box); the prediction of step ``t`` reads only those before ``t``.
            returns_to_go: float ``[B, K]``, in reward units (divided by ``return_scale`` here).
            timesteps: int64 ``[B, K]``: each step's index in its episode.
            valid: bool ``[B, K]``: real (True) and padded steps; None: all real.

        Returns:
            float32 ``[B, K, n]`` action logits (Discrete, unmasked) or ``[B, K, A]`` actions in ``[-1, 1]`` units
            (Box).

        Raises:
            SpaceError: ``obs`` has the wrong width or dtype. APIUsageError: other inputs of the wrong shape.
        """
        if obs.dim() != 3 or obs.shape[-1] != self._flat_size or obs.dtype != self._flat_dtype:
            raise SpaceError(f"DecisionTransformer takes observation rows [B, K, {self._flat_size}] of "
                             f"{self._flat_dtype}; got {list(obs.shape)} of {obs.dtype}")
        batch, steps = obs.shape[:2]
        if steps > self.context_length:
            raise APIUsageError(f"a window of {steps} steps is longer than context_length={self.context_length}")
        self._check("actions", actions, (batch, steps, *self.action_shape))
        self._check("returns_to_go", returns_to_go, (batch, steps))
        self._check("timesteps", timesteps, (batch, steps))
        if valid is not None:
            self._check("valid", valid, (batch, steps))
        time = self.embed_timestep(timesteps.long().clamp(0, self.max_timestep))
        rtg = self.embed_return((returns_to_go.to(torch.float32) / self.return_scale).unsqueeze(-1))
        state = self.embed_obs(self.encoder(obs.reshape(batch * steps, self._flat_size))).reshape(batch, steps, -1)
        if self.kind == "discrete":
            action = self.embed_action(actions.long().clamp(0, self.num_actions - 1))
        else:
            action = self.embed_action(self.to_unit_range(actions))
        # interleave per step: (R_t, s_t, a_t) -> [B, 3K, d]
        tokens = torch.stack([rtg + time, state + time, action + time], 2).reshape(batch, _TOKENS_PER_STEP * steps, -1)
        tokens = self.embed_dropout(self.embed_norm(tokens))
        out = self.transformer(tokens, mask=self._attention_mask(valid, batch, steps))
        prediction = self.head(out[:, 1::_TOKENS_PER_STEP])  # the observation tokens
        return torch.tanh(prediction) if self.kind == "continuous" else prediction

    def _attention_mask(self, valid: Tensor | None, batch: int, steps: int) -> Tensor:
        """bool ``[L, L]`` or ``[B * heads, L, L]`` (True: may not attend): causal, and no real token attends to
        a padded one. A padded token attends to itself only, so its row is never empty (an empty row would give
        NaN, which a zero attention weight does not cancel)."""
        length = _TOKENS_PER_STEP * steps
        causal = self.causal[:length, :length]
        if valid is None or bool(valid.all()):
            return causal
        tokens = valid.bool().repeat_interleave(_TOKENS_PER_STEP, 1)  # [B, L]
        blocked = causal.unsqueeze(0) | ~tokens.unsqueeze(1)
        blocked = blocked & ~torch.eye(length, dtype=torch.bool, device=blocked.device)
        return blocked.repeat_interleave(self.num_heads, 0)

    @staticmethod
    def _check(name: str, value: Tensor, shape: tuple[int, ...]) -> None:
        if tuple(value.shape) != shape:
            raise APIUsageError(f"DecisionTransformer {name} has shape {list(value.shape)}; expected {list(shape)}")

    def choose(self, prediction: Tensor, action_masks: Tensor | None = None,
               deterministic: bool = True) -> tuple[Tensor, Tensor]:
        """Actions from the predictions of one step ``[B, n]`` / ``[B, A]``: ``(action, log_prob)``.

        Discrete: the most likely legal action (or a sample of the masked softmax), int64 ``[B]``, with its
        log-probability. Box: the prediction in the space's units, float32 ``[B, A]`` (the head is deterministic,
        log-probability 0).
        """
        if self.kind == "continuous":
            return self.to_env_units(prediction), prediction.new_zeros(prediction.shape[0])
        logp = torch.log_softmax(masked_logits(prediction, action_masks), -1)
        action = logp.argmax(-1) if deterministic else torch.multinomial(logp.exp(), 1).squeeze(-1)
        return action, logp.gather(-1, action[:, None]).squeeze(-1)


class TokenContext:
    """The last ``K`` steps of every vector row, the memory a :class:`DecisionTransformer` acts from.

    Per row: windows of return-to-go (float32), observation rows, actions and timesteps (int64), each ``[N, K, ...]``
    with the newest step last; how many real steps it holds; the current return-to-go (float64 ``[N]``: the target
    less the rewards received in the episode) and the episode's next timestep.

    Args:
        model: the model acting.
        num_rows: ``N``, rows of the vector env.
        target_return: the return every episode starts to go for.
        device: where the windows live.
    """

    def __init__(self, model: DecisionTransformer, num_rows: int, target_return: float,
                 device: torch.device | str) -> None:
        k = model.context_length
        self.model = model
        self.target_return = target_return
        self.returns = torch.zeros(num_rows, k, device=device)
        self.obs = torch.zeros(num_rows, k, model._flat_size, dtype=model._flat_dtype, device=device)
        action_dtype = torch.long if model.kind == "discrete" else torch.float32
        self.actions = torch.zeros(num_rows, k, *model.action_shape, dtype=action_dtype, device=device)
        self.timesteps = torch.zeros(num_rows, k, dtype=torch.long, device=device)
        self.length = torch.zeros(num_rows, dtype=torch.long, device=device)
        self.to_go = torch.full((num_rows,), target_return, dtype=torch.float64, device=device)
        self.next_timestep = torch.zeros(num_rows, dtype=torch.long, device=device)

    @torch.no_grad()
    def act(self, rows: Tensor, obs: Tensor, starts: Tensor, rewards: Tensor, live: Tensor | None = None,
            action_masks: Tensor | None = None, deterministic: bool = True) -> tuple[Tensor, Tensor]:
        """Actions of ``rows`` (int64 ``[B]``) for observations ``obs [B, flat_size]``.

        Args:
            starts: bool ``[B]``: an episode starts at this step (the row's window is emptied and its
                return-to-go set back to the target first).
            rewards: float ``[B]``: the rewards received since the row last acted (ignored where it starts).
            live: bool ``[B]``: the rows whose step joins their window (None: all); the others only receive
                their rewards (padded or waiting agent slots).
            action_masks: bool ``[B, n]`` legal actions, or None.
            deterministic: the most likely action instead of a sample (Discrete).

        Returns:
            ``(action, log_prob)`` as :meth:`DecisionTransformer.choose`.
        """
        starts = starts.bool()
        to_go = torch.where(starts, self.target_return, self.to_go[rows] - rewards.to(torch.float64))
        step = torch.where(starts, 0, self.next_timestep[rows])
        length = torch.where(starts, 0, self.length[rows])
        self.to_go[rows] = to_go
        self.next_timestep[rows] = step
        self.length[rows] = length
        # the window of this step: the row's previous K - 1 steps, then this one (its action a placeholder)
        returns = torch.cat([self.returns[rows, 1:], to_go.to(torch.float32)[:, None]], 1)
        obs_window = torch.cat([self.obs[rows, 1:], obs[:, None]], 1)
        actions = torch.cat([self.actions[rows, 1:], torch.zeros_like(self.actions[rows, :1])], 1)
        timesteps = torch.cat([self.timesteps[rows, 1:], step[:, None]], 1)
        k = self.returns.shape[1]
        valid = torch.arange(k, device=rows.device)[None, :] >= (k - 1 - length.clamp(max=k - 1))[:, None]
        prediction = self.model(obs_window, actions, returns, timesteps, valid)[:, -1]
        action, log_prob = self.model.choose(prediction, action_masks, deterministic)
        actions[:, -1] = action
        moved = rows if live is None else rows[live.bool()]
        keep = slice(None) if live is None else live.bool()
        self.returns[moved] = returns[keep]
        self.obs[moved] = obs_window[keep]
        self.actions[moved] = actions[keep]
        self.timesteps[moved] = timesteps[keep]
        self.length[moved] = length[keep] + 1
        self.next_timestep[moved] = step[keep] + 1
        return action, log_prob

    def reset(self) -> None:
        """Forget every row's window (each row starts an episode at its next step)."""
        self.length.zero_()
        self.next_timestep.zero_()
        self.to_go.fill_(self.target_return)

    def __repr__(self) -> str:
        return (f"TokenContext(rows={len(self.length)}, context_length={self.returns.shape[1]}, "
                f"target_return={self.target_return})")

