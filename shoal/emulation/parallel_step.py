"""A faster ``step`` for PettingZoo's ``aec_to_parallel`` wrapper that returns exactly what the wrapper returns.

Most PettingZoo parallel envs (MPE, butterfly, SISL) are AEC envs behind ``aec_to_parallel_wrapper``, whose
``step`` does work it then throws away, on every step:

* before each agent's sub-step it calls ``aec_env.last()``, which computes that agent's observation and discards
  it, so every observation is computed twice;
* every read of ``agents``, ``agent_selection``, ``rewards``, ``terminations`` and so on passes through the
  ``__getattr__`` of each wrapper in the AEC chain.

:func:`direct_parallel_step` returns a replacement that performs the same sub-steps in the same order, reads the
same dicts straight from the unwrapped env and skips the discarded observations. It is only offered when the AEC
chain holds nothing but PettingZoo's own pass-through wrappers (``OrderEnforcingWrapper``,
``AssertOutOfBoundsWrapper``, ``ClipOutOfBoundsWrapper``), whose attribute reads are plain forwarding; any other
wrapper, or a subclass of the parallel wrapper, keeps the env's own ``step``. When the caller has already checked
every action against its Discrete/MultiDiscrete space (``actions_checked``) and the chain holds only the first
two wrappers, the sub-steps go to the unwrapped env directly: the wrappers would only repeat the reset-order and
action-bounds checks the emulator makes itself.

A parallel env *wrapper* of shoal's own (MAPPO's ``GlobalStateEnv``) can take part: when the class that defines its
``step`` also defines ``step_checked(actions)`` (the same as ``step`` for actions already checked against
Discrete/MultiDiscrete spaces), :func:`direct_parallel_step` offers that method to a caller that checked its
actions. A subclass that overrides ``step`` alone keeps its own ``step``.

One assumption: ``observe()`` has no side effects, so not calling it for a discarded result changes nothing.
PettingZoo's envs satisfy it; pass ``direct_parallel_step=False`` to the emulator for an env that does not.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

__all__ = ["direct_parallel_step"]

ParallelStep = Callable[[dict[str, Any]], tuple[dict, dict, dict, dict, dict]]


def _wrapper_types() -> tuple[type, type, tuple[type, ...], tuple[type, ...]]:
    from pettingzoo.utils.conversions import aec_to_parallel_wrapper
    from pettingzoo.utils.wrappers import (
        AssertOutOfBoundsWrapper,
        BaseWrapper,
        ClipOutOfBoundsWrapper,
        OrderEnforcingWrapper,
    )

    checks_only = (OrderEnforcingWrapper, AssertOutOfBoundsWrapper)
    return aec_to_parallel_wrapper, BaseWrapper, checks_only, (*checks_only, ClipOutOfBoundsWrapper)


def _defines_step_checked(kind: type) -> bool:
    """``kind`` has a ``step_checked`` defined beside the ``step`` it uses (not inherited past an override)."""
    for klass in kind.__mro__:
        if "step" in vars(klass):
            return callable(vars(klass).get("step_checked"))
    return False


def direct_parallel_step(env: Any, actions_checked: bool) -> ParallelStep | None:
    """A drop-in for ``env.step`` when ``env`` is a plain ``aec_to_parallel_wrapper``; None otherwise.

    Args:
        env: the parallel env the emulator wraps.
        actions_checked: every action passed to the returned function lies in its agent's Discrete or
            MultiDiscrete action space (the emulator validated it), so the bounds-checking wrappers may be skipped.

    Returns:
        ``step(actions) -> (observations, rewards, terminations, truncations, infos)``, the dicts the wrapper's own
        ``step`` would return, or None when the env is not a recognised wrapper chain. With ``actions_checked``, an
        env that defines ``step_checked`` gets that method.
    """
    if actions_checked and _defines_step_checked(type(env)):
        return env.step_checked
    try:
        parallel_type, base_wrapper, checks_only, pass_through = _wrapper_types()
    except ImportError:  # a PettingZoo without these names: keep the env's own step
        return None
    if type(env) is not parallel_type:
        return None
    chain = []
    inner = env.aec_env
    while type(inner) in pass_through:
        chain.append(inner)
        inner = inner.env
    if isinstance(inner, base_wrapper) or getattr(inner, "unwrapped", None) is not inner:
        return None  # an unknown wrapper sits in the chain
    top, raw = env.aec_env, inner
    trusted = actions_checked and all(type(w) in checks_only for w in chain)
    return _DirectStep(env, raw, raw.step if trusted else top.step)


class _DirectStep:
    """``aec_to_parallel_wrapper.step`` without the discarded work (a class, so emulators stay picklable)."""

    def __init__(self, env: Any, raw: Any, sub_step: Callable[[Any], None]) -> None:
        self.env, self.raw, self.sub_step = env, raw, sub_step

    def __call__(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        raw, sub_step = self.raw, self.sub_step
        rewards: defaultdict[str, float] = defaultdict(int)
        for agent in raw.agents:
            selected = raw.agent_selection
            if agent != selected:
                raise AssertionError(f"expected agent {agent} got agent {selected}: the parallel wrapper expects "
                                     "agents to step in a cycle, and deaths only at the end of one")
            sub_step(actions[agent])
            step_rewards = raw.rewards
            for other in raw.agents:
                rewards[other] += step_rewards[other]
        terminations = dict(raw.terminations)
        truncations = dict(raw.truncations)
        infos = dict(raw.infos)
        observations = {agent: raw.observe(agent) for agent in raw.agents}
        while raw.agents and (raw.terminations[raw.agent_selection] or raw.truncations[raw.agent_selection]):
            sub_step(None)
        self.env.agents = raw.agents
        return observations, rewards, terminations, truncations, infos
