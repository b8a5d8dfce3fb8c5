"""Env resolution: the ENV argument of ``shoal train`` -> a picklable env constructor.

ENV may be, tried in this order:

1. a built-in env name (``shoal list``; see :mod:`shoal.envs`), e.g. ``memory``;
2. ``"module:NAME"``, read as Gymnasium reads it or as an entry point, whichever ``NAME`` is:

   * an env id registered by importing ``module`` (Gymnasium's convention): ``ale_py:ALE/Pong-v5``,
     ``minigrid:MiniGrid-Empty-5x5-v0`` (``gymnasium.make`` of the whole string);
   * an attribute of ``module``, any callable returning a Gymnasium or PettingZoo env: ``mypkg.envs:MyEnv``.

   A NAME that is both (an attribute and, once the module is imported, a registered id) is refused as ambiguous;
   an id that is not an identifier (``ALE/Pong-v5``, ``MiniGrid-Empty-5x5-v0``) can only be an id;
3. a PettingZoo module path, e.g. ``pettingzoo.butterfly.knights_archers_zombies_v11`` (its ``parallel_env``
   when it has one, else its AEC ``env``);
4. a Gymnasium id, e.g. ``CartPole-v1`` (``gymnasium.make``).

Unknown names raise :class:`~shoal.errors.APIUsageError` with the closest known names.

An :class:`EnvFn` may also carry SuperSuit wrappers (:mod:`shoal.wrappers`), applied to every env it builds.
"""

from __future__ import annotations

import difflib
import importlib
import itertools
import math
import pkgutil
import re
import string
from dataclasses import dataclass, field
from typing import Any

from gymnasium import spaces

from shoal.emulation import register_space
from shoal.emulation.layout import is_registered
from shoal.errors import APIUsageError
from shoal.wrappers import apply_wrappers, parse_wrappers

__all__ = ["TRUSTED_ENV_MODULES", "EnvFn", "list_envs", "resolve_env"]

_PETTINGZOO_FAMILIES = ("atari", "butterfly", "classic", "mpe", "sisl")

#: Env packages whose ``module:EnvId`` names a run directory or checkpoint may hold (they only register envs on
#: import); any other module named by a file is refused, as importing it would run code the file chose.
TRUSTED_ENV_MODULES: tuple[str, ...] = (
    "ale_py", "minigrid", "miniworld", "gymnasium_robotics", "highway_env", "mo_gymnasium",
)

#: Registered ids that build another library's env from a name in their arguments (the old ``gym.make`` behind
#: them imports the module a ``"module:Env"`` id names): never taken from a file.
_LOADER_IDS = ("GymV21Environment", "GymV26Environment")


@dataclass(frozen=True)
class EnvFn:
    """A picklable env constructor (works with every vector backend).

    Attributes:
        name: the ENV string it was resolved from.
        kind: ``"builtin" | "entry_point" | "pettingzoo" | "gymnasium"``.
        kwargs: keyword arguments for the constructor.
        wrappers: SuperSuit wrappers applied to the env, a :mod:`shoal.wrappers` spec (None: none).
    """

    name: str
    kind: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    wrappers: str | None = None

    def __call__(self) -> Any:
        return apply_wrappers(self._make(), self.wrappers)

    def _make(self) -> Any:
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

        if self.name.startswith("minigrid:"):
            _register_minigrid_spaces()  # in every process that builds the env (vector workers included)
        return gym.make(self.name, **self.kwargs)

    def __hash__(self) -> int:
        return hash((self.name, self.kind, self.wrappers))


#: The characters of MiniGrid's missions (short English sentences such as "get to the green goal square").
_MISSION_CHARS = string.ascii_letters + string.digits + " ,.-'"
#: BabyAI's generated instructions have no enumerable set; its longest sentences run to a few hundred characters.
_LONG_MISSION = 512


def _mission_length(space: Any) -> int:
    """The longest mission ``space`` can hold: enumerated from its placeholders (MiniGrid's envs), else
    :data:`_LONG_MISSION` (BabyAI's language, or missions that cannot be enumerated)."""
    if "BabyAI" in type(space).__name__:
        return _LONG_MISSION
    placeholders = getattr(space, "ordered_placeholders", None)
    try:
        if placeholders is None:
            missions = [space.mission_func()]
        elif math.prod(len(options) for options in placeholders) <= 100_000:
            missions = [space.mission_func(*combo) for combo in itertools.product(*placeholders)]
        else:
            return _LONG_MISSION
        return max(len(mission) for mission in missions)
    except Exception:  # a mission function that needs arguments it does not declare: stay generous
        return _LONG_MISSION


def _register_minigrid_spaces() -> None:
    """Store MiniGrid's ``MissionSpace`` as a Text leaf as long as its longest mission, so raw MiniGrid envs named by
    an ENV string emulate without the user registering it (:func:`shoal.emulation.register_space`). A registration
    of the user's own is kept."""
    from minigrid.core.mission import MissionSpace

    if not is_registered(MissionSpace):
        register_space(MissionSpace, lambda space: spaces.Text(_mission_length(space), charset=_MISSION_CHARS))


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


def _import_env_module(module_name: str, name: str) -> Any:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", module_name):
        raise APIUsageError(f"env {name!r}: {module_name!r} is not a module name; write module:EnvId "
                            "(e.g. minigrid:MiniGrid-Empty-5x5-v0) or module:attribute (e.g. mypkg.envs:MyEnv)")
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise APIUsageError(f"cannot import {module_name!r} for env {name!r}: {exc}; install the package that "
                            "provides it") from exc


def _resolve_colon(name: str, kwargs: dict[str, Any], wrappers: str | None) -> EnvFn:
    """``module:EnvId`` (Gymnasium's convention) or ``module:attribute`` (an entry point); see the module
    docstring."""
    import gymnasium as gym

    module_name, _, rest = name.partition(":")
    module = _import_env_module(module_name, name)
    registered = rest in gym.envs.registry
    attribute = rest.isidentifier() and hasattr(module, rest)
    if registered and attribute:
        raise APIUsageError(
            f"env {name!r} is ambiguous: {rest!r} is both an attribute of {module_name!r} and a Gymnasium id that "
            f"importing it registers. Rename one of them, or pass env_fn= to shoal.train"
        )
    if registered:
        return EnvFn(name, "gymnasium", kwargs, wrappers)
    if attribute:
        if not callable(getattr(module, rest)):
            raise APIUsageError(f"{name!r} is not callable; point at an env class or factory")
        return EnvFn(name, "entry_point", kwargs, wrappers)
    suggestions = difflib.get_close_matches(rest, _gymnasium_ids(), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(f'{module_name}:{s}') for s in suggestions)}?" if suggestions else ""
    raise APIUsageError(
        f"unknown env {name!r}: importing {module_name!r} registers no Gymnasium id {rest!r}, and the module has "
        f"no attribute of that name.{hint}"
    )


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


#: ``module:EnvId`` with a trusted env package and an id (not an identifier, so never an attribute).
_TRUSTED_ID = re.compile(rf"({'|'.join(TRUSTED_ENV_MODULES)}):(?![A-Za-z_][A-Za-z0-9_]*$)[A-Za-z0-9_/.-]+")


def resolve_env(name: str, kwargs: dict[str, Any] | None = None, *, source: str | None = None,
                wrappers: str | None = None) -> EnvFn:
    """Resolve ``name`` into an :class:`EnvFn` (see the module docstring for the accepted forms).

    The env is not constructed; the name is only checked to exist.

    Args:
        name, kwargs: the ENV string and its constructor's keyword arguments.
        source: the file ``name`` was read from (a checkpoint, a run's config), when it was not given by the user.
            Such a name may only be a built-in env, a registered Gymnasium id, a PettingZoo/MPE2 env module path,
            or ``module:EnvId`` of a package in :data:`TRUSTED_ENV_MODULES`: a ``module:callable`` or any other
            module would be imported and called with arguments chosen by the file.
        wrappers: SuperSuit wrappers to apply to the env (a :mod:`shoal.wrappers` spec); checked here.

    Raises:
        APIUsageError: unknown name or missing dependency (the message says what to install or suggests
            names), an ambiguous ``module:NAME``, a bad wrapper spec, or a name from ``source`` that could run
            arbitrary code.
    """
    from shoal import envs

    kwargs = dict(kwargs or {})
    if not isinstance(name, str) or not name:
        raise APIUsageError(f"env must be a non-empty string, got {name!r}")
    parse_wrappers(wrappers)
    wrappers = wrappers if wrappers and wrappers.strip() else None
    if name in envs.REGISTRY:
        return EnvFn(name, "builtin", kwargs, wrappers)
    trusted = _TRUSTED_ID.fullmatch(name) is not None
    loader = any(loader_id in name for loader_id in _LOADER_IDS)
    if source is not None and (loader or (not trusted and (
            ":" in name or ("." in name and not _ENV_MODULE.fullmatch(name))))):
        raise APIUsageError(
            f"{source} names the env {name!r}, which loading would import and call with arguments from the file; "
            f"it is not used. If you trust the file, name the env yourself (e.g. shoal eval ... --env {name!r})"
        )
    if ":" in name:
        return _resolve_colon(name, kwargs, wrappers)
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
        return EnvFn(name, "pettingzoo", kwargs, wrappers)
    ids = _gymnasium_ids()
    if name in ids:
        return EnvFn(name, "gymnasium", kwargs, wrappers)
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
