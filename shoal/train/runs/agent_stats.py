"""Episode statistics of multi-agent runs: whole env episodes (games), and per-agent and per-team returns.

A **game** is one episode of the env: it ends when the env resets (every agent done). In a single-agent env a game
is the agent's episode; in a PettingZoo env an agent's episode ends when it terminates or truncates (dead agents
included, ``infos[r]["episode"]``), and the game once its env's next episode has started (``"reset_info"`` in the
infos of its rows), so envs whose agents die at different times (magent2 battles, knights-archers-zombies) count
one game per env episode, not one per death. :class:`GameTracker` turns the trainer's (or an evaluation's) env
results into finished :class:`Game` records.

Scalars of :class:`AgentStats` (means over the last ``window`` episodes; names are ``group/name`` as every logged
scalar), beside the trainer's per-game ``charts/episode_return``:

* ``agents/<agent>/episode_return``: the episode return of each agent (slot), e.g. ``agents/adversary_0/...``;
* ``charts/agent_episode_return``, ``charts/agent_episode_length``: over the episodes of every agent;
  ``charts/agent_episodes``: how many agent episodes ended;
* ``teams/<group>/episode_return``: per game, the summed return of a group's agents (the group is the agent
  name without ``_<digits>``, as :func:`~shoal.emulation.pettingzoo.group_of`), e.g. ``teams/adversary/...``;
* ``charts/team_return``: per game, the summed return of all its agents (the team return of a cooperative game).

In self-play (``league``) runs only the learner's seats count: ``agents/<agent>/episode_return`` is the learner's
return when it plays that agent, and a game's returns are those of the learner's seats.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shoal.emulation.pettingzoo import group_of

__all__ = ["AgentStats", "Game", "GameTracker"]

log = logging.getLogger(__name__)


@dataclass
class Game:
    """One finished env episode.

    Attributes:
        env: the env (index in the vector env) that played it.
        slots, agent_types, returns, lengths: per counted agent episode of the game, in the order they ended: its
            slot, agent-type id (-1: unknown), return and length (its actions).
    """

    env: int
    slots: list[int] = field(default_factory=list)
    agent_types: list[int] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)

    @property
    def total_return(self) -> float:
        """Summed return of the game's agents (the team return)."""
        return float(sum(self.returns))

    @property
    def mean_return(self) -> float:
        """Mean return of the game's agents (a single agent's return; a cooperative team's shared reward)."""
        return self.total_return / len(self.returns)

    @property
    def length(self) -> int:
        """The game's length: its longest agent episode (env steps of a parallel env)."""
        return max(self.lengths)


class GameTracker:
    """Collect whole env episodes from the per-row results of a vector env (see the module docstring).

    Args:
        num_envs: envs of the vector env; agents_per_env: slots per env ``A`` (rows are env-major).
    """

    def __init__(self, num_envs: int, agents_per_env: int) -> None:
        self.agents_per_env = agents_per_env
        self._open = [Game(env) for env in range(num_envs)]

    def record(
        self,
        rows: np.ndarray,
        env_ids: np.ndarray,
        infos: Sequence[dict[str, Any]],
        ended: np.ndarray,
        counted: np.ndarray | None = None,
        agent_types: np.ndarray | None = None,
    ) -> list[Game]:
        """Add the agent episodes that ended in one env result; return the games it finished.

        Args:
            rows: int64 ``[R]`` vector rows of the result (env-major); env_ids: int64 ``[R // A]`` their envs.
            infos: the ``R`` info dicts; ended: bool ``[R]`` terminals or truncations.
            counted: bool ``[R]``, the ended rows whose episodes count (default ``ended``; a league counts the
                learner's seats only). A game without counted episodes is not reported.
            agent_types: int32 ``[R]`` agent-type ids, or None.
        """
        a = self.agents_per_env
        counted = ended if counted is None else counted
        finished: list[Game] = []
        envs: list[int] = []
        for k in np.flatnonzero(ended).tolist():
            local = k // a
            if not envs or envs[-1] != local:
                envs.append(local)
            episode = infos[k].get("episode")
            if episode is None or not counted[k]:
                continue
            game = self._open[int(env_ids[local])]
            game.slots.append(int(rows[k]) % a)
            game.agent_types.append(-1 if agent_types is None else int(agent_types[k]))
            game.returns.append(float(episode["return"]))
            game.lengths.append(int(episode["length"]))
        for local in envs:
            if a > 1 and not any("reset_info" in infos[j] for j in range(local * a, (local + 1) * a)):
                continue  # agents died, others play on
            env = int(env_ids[local])
            if self._open[env].returns:
                finished.append(self._open[env])
            self._open[env] = Game(env)
        return finished


class AgentStats:
    """Collects per-agent and per-team episode returns from the trainer's env results and finished games.

    Args:
        num_envs: envs of the vector env (unused: games are tracked by :class:`GameTracker`).
        agents_per_env: slots per env ``A``.
        agents: name of the agent that owns each slot (``possible_agents``; slots beyond them are ``slot_<i>``).
        window: episodes averaged in each scalar.
    """

    def __init__(self, num_envs: int, agents_per_env: int, agents: Sequence[str], window: int = 100) -> None:
        self.agents_per_env = a = agents_per_env
        self.slot_names = [str(agents[i]) if i < len(agents) else f"slot_{i}" for i in range(a)]
        self.groups: list[str] = []
        for agent in agents:
            if group_of(agent) not in self.groups:
                self.groups.append(group_of(agent))
        #: group index of each slot's agent (the emulator's ``agent_types`` for stable slots; -1: unknown)
        self.slot_groups = np.array(
            [self.groups.index(group_of(agents[i])) if i < len(agents) else -1 for i in range(a)], np.int64
        )
        self.agent_returns = [deque(maxlen=window) for _ in range(a)]
        self.all_returns: deque[float] = deque(maxlen=window)
        self.all_lengths: deque[float] = deque(maxlen=window)
        self.agent_episodes = 0
        self.team_returns: dict[str, deque[float]] = {}
        self.total_returns: deque[float] = deque(maxlen=window)
        self.window = window

    @classmethod
    def for_env(
        cls, env_fn: Callable[[], Any], num_envs: int, agents_per_env: int, window: int = 100
    ) -> AgentStats | None:
        """Stats for a multi-agent env (names from one probe instance's ``possible_agents``); None when
        ``agents_per_env == 1``."""
        if agents_per_env <= 1:
            return None
        agents: list[str] = []
        try:
            env = env_fn()
            try:
                agents = [str(x) for x in getattr(env, "possible_agents", None) or ()]
            finally:
                env.close()
        except Exception:  # names are cosmetic: fall back to slot numbers
            log.debug("could not read the agent names of the env", exc_info=True)
        return cls(num_envs, agents_per_env, agents[:agents_per_env], window)

    def _group(self, slot: int, agent_type: int) -> str:
        g = int(self.slot_groups[slot])
        if g < 0:
            g = agent_type
        return self.groups[g] if 0 <= g < len(self.groups) else f"type_{g}"

    def record(
        self,
        rows: np.ndarray,
        env_ids: np.ndarray,
        infos: Sequence[dict[str, Any]],
        ended: np.ndarray,
        agent_types: np.ndarray | None = None,
        games: Sequence[Game] = (),
    ) -> None:
        """Add the agent episodes that ended in one env result, and the games it finished.

        Args:
            rows: int64 ``[R]`` vector rows of the result (env-major); env_ids: int64 ``[R // A]`` their envs.
            infos: the ``R`` info dicts; ended: bool ``[R]`` the ended rows whose episodes count.
            agent_types: int32 ``[R]`` agent-type ids (used for slots without a known agent), or None.
            games: the games this result finished (:meth:`GameTracker.record`), for the team returns.
        """
        a = self.agents_per_env
        for k in np.flatnonzero(ended).tolist():
            episode = infos[k].get("episode")
            if episode is None:
                continue
            value = float(episode["return"])
            self.agent_returns[int(rows[k]) % a].append(value)
            self.all_returns.append(value)
            self.all_lengths.append(float(episode["length"]))
            self.agent_episodes += 1
        for game in games:
            totals: dict[str, float] = {}
            for slot, agent_type, value in zip(game.slots, game.agent_types, game.returns, strict=True):
                group = self._group(slot, agent_type)
                totals[group] = totals.get(group, 0.0) + value
            for group, value in totals.items():
                self.team_returns.setdefault(group, deque(maxlen=self.window)).append(value)
            self.total_returns.append(game.total_return)

    def scalars(self) -> dict[str, float]:
        """The current means (only of agents and teams with finished episodes)."""
        out: dict[str, float] = {"charts/agent_episodes": float(self.agent_episodes)}
        if self.all_returns:
            out["charts/agent_episode_return"] = float(np.mean(self.all_returns))
            out["charts/agent_episode_length"] = float(np.mean(self.all_lengths))
        if self.total_returns:
            out["charts/team_return"] = float(np.mean(self.total_returns))
        for group, values in self.team_returns.items():
            out[f"teams/{group}/episode_return"] = float(np.mean(values))
        for name, values in zip(self.slot_names, self.agent_returns, strict=True):
            if values:
                out[f"agents/{name}/episode_return"] = float(np.mean(values))
        return out
