"""Advantage estimators as pure functions: GAE and V-trace-clipped GAE ("puff advantage").

Shape contract (every function)
    Inputs are ``[N, T]``: ``N`` independent sequences (rollout segments, one agent slot each) of ``T`` steps,
    time on the last axis. Tensors or numpy arrays are accepted; the result has the type (and, for tensors,
    the
    device) of ``rewards`` and dtype float32.

    * ``rewards[n, t]``: reward of the action taken at step ``t``.
    * ``values[n, t]``: critic value ``V(s_t)`` recorded when that action was taken.
    * ``next_values[n, t]``: value of the state *after* step ``t``: ``V(s_{t+1})`` while the episode goes on,
      ``V(final observation)`` when the episode was truncated after step ``t``, and ``0`` when it terminated.
      :func:`next_values_from` builds it from the usual ``(values, bootstrap, terminals, truncations,
      final_values)`` inputs.
    * ``dones[n, t]``: the trace stops after step ``t``: the episode terminated or was truncated, or step
      ``t`` is the last valid step of its sequence (the sequence continues elsewhere and ``next_values`` holds
      the bootstrap).

    With ``delta_t = rewards_t + gamma * next_values_t - values_t``:

    * GAE: ``A_t = delta_t + gamma * lam * (1 - dones_t) * A_{t+1}``;
    * V-trace-clipped GAE: ``A_t = rho_t * delta_t + gamma * lam * c_t * (1 - dones_t) * A_{t+1}`` with
      ``rho_t = min(ratio_t, rho_clip)`` and ``c_t = min(ratio_t, c_clip)``, ``ratio_t = pi(a_t|s_t) /
      mu(a_t|s_t)`` the importance ratio of the current policy to the one that acted. With ratios of 1 (and
      clips >= 1) it is exactly GAE.

    Value targets are ``advantages + values``. Padding steps (no data) must have ``rewards = values =
    next_values = 0`` and ``dones = True``: their advantage is then exactly 0 and they do not leak into
    earlier steps.

Each estimator has a plain-loop ``*_reference`` twin written for clarity; the tests check they agree.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = [
    "gae",
    "gae_reference",
    "next_values_from",
    "vtrace_gae",
    "vtrace_gae_reference",
]

Array = Any  # torch.Tensor | np.ndarray


def _np(x: Array, dtype: Any = np.float32) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _like(result: np.ndarray, template: Array) -> Array:
    if isinstance(template, torch.Tensor):
        return torch.from_numpy(result).to(template.device)
    return result


def _check(name: str, x: Array, shape: tuple[int, ...]) -> None:
    if tuple(x.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(x.shape)}; expected {shape} (every input is [N, T])")


def _reverse_scan(deltas: np.ndarray, coefs: np.ndarray) -> np.ndarray:
    """Solve ``out_t = deltas_t + coefs_t * out_{t+1}`` (``out_T = 0``) along the last axis of ``[N, T]``."""
    d = np.ascontiguousarray(deltas.T)  # [T, N]: each step is one contiguous row
    c = np.ascontiguousarray(coefs.T)
    out = np.empty_like(d)
    last = np.zeros(d.shape[1], d.dtype)
    for t in range(d.shape[0] - 1, -1, -1):
        last = d[t] + c[t] * last
        out[t] = last
    return np.ascontiguousarray(out.T)


def gae(
    rewards: Array, values: Array, next_values: Array, dones: Array, *, gamma: float, lam: float
) -> Array:
    """Generalized advantage estimation, vectorized over sequences (see the module docstring).

    Args:
        rewards, values, next_values: float ``[N, T]``.
        dones: bool ``[N, T]``, True where the trace stops after the step.
        gamma: discount; lam: GAE lambda.

    Returns:
        float32 ``[N, T]`` advantages.
    """
    r, v, nv = _np(rewards), _np(values), _np(next_values)
    d = _np(dones, np.bool_)
    for name, x in (("values", v), ("next_values", nv), ("dones", d)):
        _check(name, x, r.shape)
    deltas = r + np.float32(gamma) * nv - v
    coefs = np.float32(gamma * lam) * (~d)
    return _like(_reverse_scan(deltas, coefs), rewards)


def vtrace_gae(
    rewards: Array,
    values: Array,
    next_values: Array,
    dones: Array,
    ratios: Array,
    *,
    gamma: float,
    lam: float,
    rho_clip: float = 1.0,
    c_clip: float = 1.0,
) -> Array:
    """V-trace-clipped GAE ("puff advantage"): GAE with truncated importance weights (module docstring).

    Args:
        rewards, values, next_values: float ``[N, T]``; dones: bool ``[N, T]``.
        ratios: float ``[N, T]`` importance ratios ``pi / mu`` of the taken actions (ones right after the
            rollout).
        gamma, lam: discount and lambda; rho_clip, c_clip: upper clips of the ratios in the TD-error weight
            and in the trace.

    Returns:
        float32 ``[N, T]`` advantages.
    """
    r, v, nv, w = _np(rewards), _np(values), _np(next_values), _np(ratios)
    d = _np(dones, np.bool_)
    for name, x in (("values", v), ("next_values", nv), ("dones", d), ("ratios", w)):
        _check(name, x, r.shape)
    rho = np.minimum(w, np.float32(rho_clip))
    c = np.minimum(w, np.float32(c_clip))
    deltas = rho * (r + np.float32(gamma) * nv - v)
    coefs = np.float32(gamma * lam) * c * (~d)
    return _like(_reverse_scan(deltas, coefs), rewards)


def next_values_from(
    values: Array, bootstrap: Array, terminals: Array, truncations: Array, final_values: Array | None = None
) -> Array:
    """``next_values`` for sequences that are consecutive steps of one env (the classic rollout layout).

    Args:
        values: float ``[N, T]`` values of the visited states.
        bootstrap: float ``[N]`` value of the state that follows step ``T - 1``.
        terminals: bool ``[N, T]`` the episode terminated after the step (next value 0).
        truncations: bool ``[N, T]`` the episode was truncated after the step (next value = ``final_values``).
        final_values: float ``[N, T]`` value of the final observation, read where truncated and not
            terminated; None means 0 (no bootstrap: only right when nothing is truncated).

    Returns:
        float32 ``[N, T]`` next values.
    """
    v = _np(values)
    nv = np.empty_like(v)
    nv[:, :-1] = v[:, 1:]
    nv[:, -1] = _np(bootstrap)
    term, trunc = _np(terminals, np.bool_), _np(truncations, np.bool_)
    final = np.zeros_like(v) if final_values is None else _np(final_values)
    nv = np.where(trunc & ~term, final, nv)
    nv = np.where(term, np.float32(0.0), nv)
    return _like(nv.astype(np.float32), values)


# ------------------------------------------------------------------------------------------------------------
# Plain-loop references, written from the textbook definitions on the classic inputs
# ------------------------------------------------------------------------------------------------------------


def gae_reference(
    rewards: Array,
    values: Array,
    bootstrap: Array,
    terminals: Array,
    truncations: Array,
    final_values: Array,
    *,
    gamma: float,
    lam: float,
) -> np.ndarray:
    """GAE with a Python loop over every sequence and step; same conventions as :func:`next_values_from`.

    Returns:
        float64 ``[N, T]`` numpy advantages.
    """
    return vtrace_gae_reference(
        rewards,
        values,
        bootstrap,
        terminals,
        truncations,
        final_values,
        np.ones(np.shape(rewards)),
        gamma=gamma,
        lam=lam,
        rho_clip=np.inf,
        c_clip=np.inf,
    )


def vtrace_gae_reference(
    rewards: Array,
    values: Array,
    bootstrap: Array,
    terminals: Array,
    truncations: Array,
    final_values: Array,
    ratios: Array,
    *,
    gamma: float,
    lam: float,
    rho_clip: float,
    c_clip: float,
) -> np.ndarray:
    """V-trace-clipped GAE with a Python loop over every sequence and step (float64).

    Returns:
        float64 ``[N, T]`` numpy advantages.
    """
    r, v, b = _np(rewards, np.float64), _np(values, np.float64), _np(bootstrap, np.float64)
    term, trunc = _np(terminals, np.bool_), _np(truncations, np.bool_)
    final, w = _np(final_values, np.float64), _np(ratios, np.float64)
    n_seq, steps = r.shape
    out = np.zeros((n_seq, steps))
    for n in range(n_seq):
        following = 0.0  # advantage of the next step in the same episode
        for t in reversed(range(steps)):
            if term[n, t]:
                next_value, ended = 0.0, True
            elif trunc[n, t]:
                next_value, ended = final[n, t], True
            else:
                next_value = v[n, t + 1] if t + 1 < steps else b[n]
                ended = False
            rho = min(w[n, t], rho_clip)
            c = min(w[n, t], c_clip)
            delta = r[n, t] + gamma * next_value - v[n, t]
            following = rho * delta + (0.0 if ended else gamma * lam * c * following)
            out[n, t] = following
    return out
