"""Env resolution: the ENV argument of ``shoal train`` -> a picklable env constructor.

ENV may be, tried in this order:

1. a built-in env name (``shoal list``; see :mod:`shoal.envs`), e.g. ``memory``;
2. ``"module:attribute"``: any callable returning a Gymnasium or PettingZoo env, e.g. ``mypkg.envs:MyEnv``;
3. a PettingZoo module path, e.g. ``pettingzoo.butterfly.knights_archers_zombies_v11`` (its ``parallel_env``
   when it has one, else its AEC ``env``);
4. a Gymnasium id, e.g. ``CartPole-v1`` (``gymnasium.make``).

Unknown names raise :class:`~shoal.errors.APIUsageError` with the closest known names.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
import re
from dataclasses import dataclass, field
from typing import Any

from shoal.errors import APIUsageError

__all__ = ["EnvFn", "list_envs", "resolve_env"]

_PETTINGZOO_FAMILIES = ("atari", "butterfly", "classic", "mpe", "sisl")


@dataclass(frozen=True)
class EnvFn:
    """A picklable env constructor (works with every vector backend).

    Attributes:
        name: the ENV string it was resolved from.
        kind: ``"builtin" | "entry_point" | "pettingzoo" | "gymnasium"``.
        kwargs: keyword arguments for the constructor.
    """

    name: str
    kind: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self) -> Any:
        if self.kind == "builtin":
            from shoal import envs

            return envs.make(self.name, **self.kwargs)
        if self.kind == "entry_point":
            return _load_attribute(self.name)(**self.kwargs)
        if self.kind == "pettingzoo":
            module = importlib.import_module(self.name)
            factory = getattr(module, "parallel_env", None) or module.env
            return factory(**self.kwargs)
        import gymnasium as gym

        return gym.make(self.name, **self.kwargs)

    def __hash__(self) -> int:
        return hash((self.name, self.kind))


def _load_attribute(spec: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise APIUsageError(f"cannot import {module_name!r} for env {spec!r}: {exc}") from exc
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise APIUsageError(f"module {module_name!r} has no attribute {attribute!r} (env {spec!r})") from None


def _gymnasium_ids() -> list[str]:
    import gymnasium as gym

    return sorted(gym.envs.registry.keys())


def _pettingzoo_modules() -> list[str]:
    """Module paths of PettingZoo's envs, found without importing them."""
    try:
        import pettingzoo
    except ImportError:
        return []
    out = []
    for family in _PETTINGZOO_FAMILIES:
        for path in pettingzoo.__path__:
            folder = f"{path}/{family}"
            for info in pkgutil.iter_modules([folder]):
                if re.fullmatch(r".+_v\d+", info.name):
                    out.append(f"pettingzoo.{family}.{info.name}")
    return sorted(set(out))


#: The form of a PettingZoo (or MPE2) env module path accepted from a file: ``family.module_vN`` names only.
_ENV_MODULE = re.compile(r"(pettingzoo|mpe2)(\.[a-z0-9_]+)+_v\d+")


def resolve_env(name: str, kwargs: dict[str, Any] | None = None, *, source: str | None = None) -> EnvFn:
    """Resolve ``name`` into an :class:`EnvFn` (see the module docstring for the accepted forms).

    The env is not constructed; the name is only checked to exist.

    Args:
        name, kwargs: the ENV string and its constructor's keyword arguments.
        source: the file ``name`` was read from (a checkpoint, a run's config), when it was not given by the user.
            Such a name may only be a built-in env, a registered Gymnasium id or a PettingZoo/MPE2 env module
            path: a ``module:callable`` or any other module would be imported and called with arguments chosen
            by the file.

    Raises:
        APIUsageError: unknown name or missing dependency (the message says what to install or suggests
            names), or a name from ``source`` that could run arbitrary code.
    """
    from shoal import envs

    kwargs = dict(kwargs or {})
    if not isinstance(name, str) or not name:
        raise APIUsageError(f"env must be a non-empty string, got {name!r}")
    if name in envs.REGISTRY:
        return EnvFn(name, "builtin", kwargs)
    if source is not None and (":" in name or ("." in name and not _ENV_MODULE.fullmatch(name))):
        raise APIUsageError(
            f"{source} names the env {name!r}, which loading would import and call with arguments from the file; "
            f"it is not used. If you trust the file, name the env yourself (e.g. shoal eval ... --env {name!r})"
        )
    if ":" in name:
        if not callable(_load_attribute(name)):
            raise APIUsageError(f"{name!r} is not callable; point at an env class or factory")
        return EnvFn(name, "entry_point", kwargs)
    if name.startswith("pettingzoo.") or (("." in name) and "-v" not in name):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                suggestions = difflib.get_close_matches(name, _pettingzoo_modules(), n=3, cutoff=0.6)
                hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
                raise APIUsageError(f"unknown env {name!r}: no module of that name{hint}") from None
            raise APIUsageError(
                f"env {name!r} needs a missing package ({exc.name}); for PettingZoo envs install "
                f"the family's extras, e.g. pip install 'pettingzoo[butterfly]'"
            ) from exc
        except ImportError as exc:
            raise APIUsageError(f"cannot import env module {name!r}: {exc}") from exc
        if not (hasattr(module, "parallel_env") or hasattr(module, "env")):
            raise APIUsageError(
                f"module {name!r} has neither parallel_env nor env: it is not a PettingZoo env module"
            )
        return EnvFn(name, "pettingzoo", kwargs)
    ids = _gymnasium_ids()
    if name in ids:
        return EnvFn(name, "gymnasium", kwargs)
    candidates = [*envs.names(), *ids]
    suggestions = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(s) for s in suggestions)}?" if suggestions else ""
    raise APIUsageError(
        f"unknown env {name!r}: not a built-in env, a Gymnasium id or a PettingZoo module path.{hint}"
        " Run `shoal list` to see what is available."
    )


def list_envs() -> dict[str, list[str]]:
    """Known env names by source: ``builtin`` (described), ``gymnasium`` ids, ``pettingzoo`` modules."""
    from shoal import envs

    return {
        "builtin": [f"{entry.name}: {entry.description}" for entry in envs.REGISTRY.values()],
        "gymnasium": _gymnasium_ids(),
        "pettingzoo": _pettingzoo_modules(),
    }
