"""SuperSuit wrappers from a text spec: ``"color_reduction_v0(mode='B'),resize_v1(84,84),frame_stack_v1(4)"``.

A spec is a comma-separated list of calls, applied left to right to the env before shoal emulates it (the
``wrappers`` field of :class:`~shoal.train.TrainConfig`, ``shoal train ENV --wrappers SPEC``). The spec is read
from the command line and from run directories, so it is parsed, never evaluated: :func:`parse_wrappers` accepts
only ``name(literal, ..., key=literal)`` where ``name`` is one of :data:`WRAPPERS` and every argument is a Python
literal (numbers, strings, booleans, None, tuples, lists, dicts of those).

Some SuperSuit wrappers are refused with the reason (:data:`REFUSED`): the ones taking functions (a spec holds no
code) and the vectorizing ones (``shoal.vector`` vectorizes, see ``num_envs`` and ``backend``).
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shoal.errors import APIUsageError

__all__ = ["REFUSED", "WRAPPERS", "WrappedEnvFn", "Wrapper", "apply_wrappers", "parse_wrappers"]

#: SuperSuit wrappers a spec may name (env in, env out; Gymnasium and PettingZoo unless marked multi-agent).
WRAPPERS: tuple[str, ...] = (
    "clip_actions_v0",
    "clip_reward_v0",
    "color_reduction_v0",
    "delay_observations_v0",
    "dtype_v0",
    "flatten_v0",
    "frame_skip_v0",
    "frame_stack_v1",
    "frame_stack_v2",
    "max_observation_v0",
    "nan_noop_v0",
    "nan_random_v0",
    "nan_zeros_v0",
    "normalize_obs_v0",
    "reshape_v0",
    "resize_v1",
    "scale_actions_v0",
    "sticky_actions_v0",
    # multi-agent only; shoal's emulation already does what they do (see the README), they are accepted anyway
    "agent_indicator_v0",
    "black_death_v3",
    "pad_action_space_v0",
    "pad_observations_v0",
)

_TAKES_CODE = "takes a function, which a spec cannot hold; wrap the env in Python and pass env_fn= to shoal.train"
_VECTORIZES = "vectorizes envs, which shoal.vector does (num_envs, backend); drop it from the spec"

#: SuperSuit names a spec may not hold, with the reason.
REFUSED: dict[str, str] = {
    "action_lambda_v1": _TAKES_CODE,
    "observation_lambda_v0": _TAKES_CODE,
    "reward_lambda_v0": _TAKES_CODE,
    "concat_vec_envs_v1": _VECTORIZES,
    "gym_vec_env_v0": _VECTORIZES,
    "pettingzoo_env_to_vec_env_v1": _VECTORIZES,
    "stable_baselines3_vec_env_v0": _VECTORIZES,
    "stable_baselines_vec_env_v0": _VECTORIZES,
    "vectorize_aec_env_v0": _VECTORIZES,
}


@dataclass(frozen=True)
class Wrapper:
    """One parsed call of a spec: ``name(*args, **kwargs)`` with literal arguments."""

    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def __str__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.name}({', '.join(parts)})"


def _valid() -> str:
    return ", ".join(WRAPPERS)


def _literal(node: ast.expr, name: str, spec: str) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, MemoryError, RecursionError):  # e.g. an unhashable dict key
        raise APIUsageError(
            f"wrappers: argument {ast.unparse(node)!r} of {name} in {spec!r} is not a literal; arguments must be "
            "numbers, strings, booleans, None, or tuples/lists/dicts of those"
        ) from None


def parse_wrappers(spec: str | None) -> tuple[Wrapper, ...]:
    """Parse a wrapper spec (see the module docstring) into :class:`Wrapper` calls, in the order they apply.

    ``None`` or an empty/blank string is no wrapper.

    Raises:
        APIUsageError: not a comma-separated list of calls, an unknown or refused wrapper (the message lists the
            valid names), or an argument that is not a literal.
    """
    if spec is None:
        return ()
    if not isinstance(spec, str):
        raise APIUsageError(f"wrappers must be a string like \"resize_v1(84, 84),frame_stack_v1(4)\", got {spec!r}")
    if not spec.strip():
        return ()
    try:
        tree = ast.parse(spec.strip(), mode="eval")
    except SyntaxError as exc:
        raise APIUsageError(
            f"wrappers: cannot parse {spec!r} ({exc.msg}); write calls separated by commas, e.g. "
            "\"color_reduction_v0(mode='B'),resize_v1(84,84),frame_stack_v1(4)\""
        ) from None
    calls = tree.body.elts if isinstance(tree.body, ast.Tuple) else [tree.body]
    out = []
    for call in calls:
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)):
            text = ast.unparse(call)
            hint = f" (write {text}() to call it)" if isinstance(call, ast.Name) else ""
            raise APIUsageError(f"wrappers: {text!r} in {spec!r} is not a call of a SuperSuit wrapper{hint}; "
                                f"valid wrappers: {_valid()}")
        name = call.func.id
        if name in REFUSED:
            raise APIUsageError(f"wrappers: {name} {REFUSED[name]}")
        if name not in WRAPPERS:
            raise APIUsageError(f"wrappers: unknown wrapper {name!r} in {spec!r}; valid wrappers: {_valid()}")
        if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
            raise APIUsageError(f"wrappers: {name} in {spec!r} unpacks arguments (* or **); write them out")
        args = tuple(_literal(a, name, spec) for a in call.args)
        kwargs = {k.arg: _literal(k.value, name, spec) for k in call.keywords}
        out.append(Wrapper(name, args, kwargs))
    return tuple(out)


def apply_wrappers(env: Any, spec: str | tuple[Wrapper, ...] | None) -> Any:
    """``env`` wrapped by every wrapper of ``spec`` (a spec string or :func:`parse_wrappers` output), in order.

    Raises:
        APIUsageError: a bad spec, or a wrapper that refuses the env or its arguments (the message names it).
    """
    wrappers = parse_wrappers(spec) if spec is None or isinstance(spec, str) else spec
    if not wrappers:
        return env
    import supersuit

    for wrapper in wrappers:
        factory = getattr(supersuit, wrapper.name, None)
        if factory is None:
            raise APIUsageError(f"wrappers: the installed supersuit has no {wrapper.name}; upgrade it "
                                "(pip install -U supersuit)")
        try:
            env = factory(env, *wrapper.args, **wrapper.kwargs)
        except (TypeError, ValueError, AssertionError, AttributeError) as exc:
            raise APIUsageError(f"wrappers: {wrapper} cannot wrap {type(env).__name__}: "
                                f"{type(exc).__name__}: {exc}") from exc
    return env


@dataclass(frozen=True)
class WrappedEnvFn:
    """A picklable env constructor: ``env_fn()`` wrapped by the wrappers of ``spec`` (see :func:`apply_wrappers`)."""

    env_fn: Callable[[], Any]
    spec: str

    def __call__(self) -> Any:
        return apply_wrappers(self.env_fn(), self.spec)
