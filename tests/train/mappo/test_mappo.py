"""MAPPO: the centralized critic's input is per env, dead/padded slots change nothing, coordination is solved fast,
value normalization, heterogeneous and dying agents, per-agent/per-team statistics, resume, command line."""

from __future__ import annotations

import copy
import functools
import itertools
import json
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gymnasium import spaces
from pettingzoo import ParallelEnv

from shoal.cli import main
from shoal.emulation import PettingZooEmulator
from shoal.emulation.layout import compile_layout
from shoal.envs.squad import SquadEnv
from shoal.errors import APIUsageError, CheckpointError
from shoal.policies import Policy, ResidualCritic
from shoal.train import TrainConfig, Trainer, train
from shoal.train.api import trainer_class
from shoal.train.config import ALGO_DEFAULTS
from shoal.train.core.normalize import PopArt, ValueNormalizer
from shoal.train.core.ppo import ppo_update
from shoal.train.core.rollout import RolloutTensors
from shoal.train.mappo.trainer import (
    GLOBAL_STATE_KEY,
    CriticBuffer,
    GlobalStateEnv,
    MAPPOTrainer,
    critic_input,
    critic_input_size,
)
from shoal.train.runs.logger import read_scalars
from tests.train.rollouts import Garbage

# ------------------------------------------------------------------------------------------------------------
# Test envs
# ------------------------------------------------------------------------------------------------------------


class TaggedEnv(ParallelEnv):
    """Two agents whose observations ``[tag, slot, t]`` and state ``[tag, t]`` carry the env instance's tag.

    ``agent_1`` dies after 3 steps; ``agent_0`` is truncated after ``length`` steps. Reward 1 for action 0.
    """

    metadata = {"name": "tagged_v0"}
    _tags = itertools.count()

    def __init__(self, length: int = 6) -> None:
        self.tag = 5 + next(TaggedEnv._tags) % 90
        self.length = length
        self.possible_agents = ["agent_0", "agent_1"]
        self.agents: list[str] = []
        self.state_space = spaces.Box(0.0, 100.0, (2,), np.float32)
        self._t = 0

    @functools.cache  # noqa: B019
    def observation_space(self, agent: str) -> spaces.Box:
        return spaces.Box(0.0, 100.0, (3,), np.float32)

    @functools.cache  # noqa: B019
    def action_space(self, agent: str) -> spaces.Discrete:
        return spaces.Discrete(2)

    def state(self) -> np.ndarray:
        return np.array([self.tag, self._t], np.float32)

    def _obs(self, agents: list[str]) -> dict[str, np.ndarray]:
        return {a: np.array([self.tag, int(a[-1]), self._t], np.float32) for a in agents}

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        self.agents = list(self.possible_agents)
        self._t = 0
        return self._obs(self.agents), {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        self._t += 1
        acting = list(self.agents)
        rewards = {a: float(int(actions[a]) == 0) for a in acting}
        terms = {a: a == "agent_1" and self._t >= 3 for a in acting}
        truncs = {a: a == "agent_0" and self._t >= self.length for a in acting}
        self.agents = [a for a in acting if not (terms[a] or truncs[a])]
        return self._obs(acting), rewards, terms, truncs, {a: {} for a in acting}


class StateSquadEnv(SquadEnv):
    """:class:`SquadEnv` with a global state: the fraction of the episode elapsed and who is alive."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state_space = spaces.Box(0.0, 1.0, (1 + len(self.possible_agents),), np.float32)

    def state(self) -> np.ndarray:
        alive = [float(a in self.agents) for a in self.possible_agents]
        return np.array([self._t / self.max_steps, *alive], np.float32)


def state_squad() -> StateSquadEnv:
    return StateSquadEnv(num_agents=3, max_steps=6)


FAST = dict(horizon=8, update_epochs=2, log_interval=0.0, tensorboard=False)

# ------------------------------------------------------------------------------------------------------------
# The critic's input is built per env
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_state", [False, True], ids=["concat", "state"])
def test_critic_input_of_an_env_depends_only_on_its_own_live_slots(with_state: bool) -> None:
    layout = compile_layout(spaces.Box(-1.0, 1.0, (4,), np.float32))
    g = torch.Generator().manual_seed(0)
    envs, slots, types = 5, 3, 2
    obs = torch.rand(envs, slots, 4, generator=g) * 2 - 1
    masks = torch.rand(envs, slots, generator=g) > 0.3
    agent_types = torch.randint(-1, types, (envs, slots), generator=g)
    states = torch.randn(envs, 7, generator=g) if with_state else None
    base = critic_input(layout, obs, masks, agent_types, types, states)
    size = critic_input_size(layout, slots, types, 7 if with_state else None)
    assert base.shape == (envs, slots, size) and base.dtype == torch.float32
    for e in range(envs):
        # junk in every other env and in this env's masked slots (NaN included) changes nothing in env e
        junk = torch.randn(envs, slots, 4, generator=g) * 1e3
        junk[torch.rand(envs, slots, generator=g) > 0.5] = float("nan")
        keep = torch.zeros(envs, slots, dtype=torch.bool)
        keep[e] = masks[e]
        changed = torch.where(keep.unsqueeze(-1), obs, junk)
        other_states = None if states is None else torch.where(torch.arange(envs)[:, None] == e, states, -states)
        out = critic_input(layout, changed, masks, agent_types, types, other_states)
        assert torch.equal(out[e], base[e])
        # env e alone (E = 1) gives the same rows
        alone = critic_input(
            layout,
            obs[e : e + 1],
            masks[e : e + 1],
            agent_types[e : e + 1],
            types,
            None if states is None else states[e : e + 1],
        )
        assert torch.equal(alone[0], base[e])
    # a live slot's observation does reach the other live slots of its env in concat mode (and its own row)
    e, j = next((e, j) for e in range(envs) for j in range(slots) if masks[e, j])
    moved = obs.clone()
    moved[e, j] += 0.5
    out = critic_input(layout, moved, masks, agent_types, types, states)
    others = [k for k in range(envs) if k != e]
    assert torch.equal(out[others], base[others])
    assert not torch.equal(out[e, j], base[e, j])
    if not with_state:
        assert all(not torch.equal(out[e, k], base[e, k]) for k in range(slots))
    # the slot and type one-hots tell the rows of an env apart
    tail = base[..., -(slots + types) :]
    assert torch.equal(tail[..., :slots], torch.eye(slots).expand(envs, slots, slots))
    expected_types = torch.nn.functional.one_hot(agent_types.clamp(min=0), types) * (agent_types >= 0)[..., None]
    assert torch.equal(tail[..., slots:], expected_types.float())


@pytest.mark.parametrize("critic", ["concat", "state"])
def test_trainer_builds_each_env_critic_input_from_that_env_only(critic: str) -> None:
    # 4 envs in 2 serial workers stepped 2 at a time: partial batches, rows of envs 0-1 or 2-3 (env-major)
    cfg = TrainConfig(algo="mappo",
        env="tagged",
        total_steps=16 * 6,
        num_envs=4,
        num_workers=2,
        env_batch_size=2,
        batch_size=16,
        minibatch_size=16,
        critic_input=critic,
        **FAST,
    )
    trainer = MAPPOTrainer(cfg, env_fn=TaggedEnv)
    seen: list[tuple[np.ndarray, np.ndarray, np.ndarray, torch.Tensor]] = []
    original = trainer.critic_inputs

    def spy(carry: Any, live: Any) -> torch.Tensor:
        x = original(carry, live)
        seen.append((carry.env_ids.copy(), carry.obs.copy(), carry.masks.copy(), x.clone()))
        return x

    trainer.critic_inputs = spy  # type: ignore[method-assign]
    trainer.train()
    assert trainer.critic_mode == critic
    assert seen and any(len(env_ids) < 4 for env_ids, *_ in seen)
    tags_by_env: dict[int, float] = {}
    for env_ids, obs, masks, x in seen:
        rows = obs.reshape(len(env_ids), 2, 3)
        live = masks.reshape(len(env_ids), 2)
        x = x.reshape(len(env_ids), 2, -1)
        for local, env in enumerate(env_ids.tolist()):
            for slot in np.flatnonzero(live[local]).tolist():
                tag = float(rows[local, slot, 0])
                assert tags_by_env.setdefault(env, tag) == tag  # an env keeps its tag: rows map to envs
                # observations: a float Box goes in as is (encoders.leaf_scaling); state(): rescaled by its bounds
                scaled = tag if critic == "concat" else tag / 50.0 - 1.0
                if critic == "state":
                    assert x[local, slot, 0].item() == pytest.approx(scaled)  # this env's state()
                else:  # every live slot in the joint part carries this env's tag; dead slots are zero
                    for k in range(2):
                        value = x[local, slot, k * 3].item()
                        assert value == (pytest.approx(scaled) if live[local, k] else 0.0)
    assert len(set(tags_by_env.values())) == 4


# ------------------------------------------------------------------------------------------------------------
# Dead and padded slots have no effect
# ------------------------------------------------------------------------------------------------------------


def _squad_run(junk_seed: int | None, **overrides: Any) -> tuple[dict[str, torch.Tensor], list[float], Any]:
    cfg = TrainConfig(algo="mappo",
        env="squad",
        max_agents=5,
        num_envs=2,
        horizon=8,
        batch_size=96,
        minibatch_size=32,
        update_epochs=2,
        total_steps=96 * 4,
        seed=3,
        log_interval=0.0,
        **overrides,
    )
    returns: list[float] = []
    trainer = MAPPOTrainer(
        cfg, env_fn=state_squad, callbacks=[lambda r: returns.append(r.scalars.get("charts/episode_return", 0.0))]
    )
    if junk_seed is not None:
        trainer.vecenv = Garbage(trainer.vecenv, junk_seed)
    result = trainer.train()
    weights = {k: v.clone() for k, v in result.policy.state_dict().items()}
    return weights, returns, trainer


@pytest.mark.parametrize("critic", ["concat", "state"])
def test_dead_and_padded_slots_have_no_effect_on_mappo(critic: str) -> None:
    # squad: agents die on a wrong move; 5 slots for 3 agents, so slots 3 and 4 are always padding
    clean, clean_returns, a = _squad_run(None, critic_input=critic)
    dirty, dirty_returns, b = _squad_run(1, critic_input=critic)
    assert a.critic_mode == critic and a.value_norm is not None
    assert clean_returns == dirty_returns
    for name in clean:
        assert torch.equal(clean[name], dirty[name]), name
    assert a.value_norm.state_dict()["running_mean"] == b.value_norm.state_dict()["running_mean"]


def test_masked_transitions_have_no_effect_on_the_mappo_loss() -> None:
    # one update on a rollout with junk (NaN included) in the padding of every input: same gradients
    torch.manual_seed(0)
    layout = compile_layout(spaces.Box(-1.0, 1.0, (3,), np.float32))
    policy = Policy(layout, spaces.Discrete(2), hidden_size=8, critic_input_size=5)
    s, h = 4, 6
    g = torch.Generator().manual_seed(1)
    valid = torch.rand(s, h, generator=g) > 0.3
    valid[:, 0] = True
    data = {
        "obs": torch.rand(s, h, 3, generator=g),
        "actions": torch.randint(0, 2, (s, h), generator=g),
        "log_probs": -torch.rand(s, h, generator=g),
        "values": torch.randn(s, h, generator=g),
        "rewards": torch.randn(s, h, generator=g),
        "next_values": torch.randn(s, h, generator=g),
        "dones": ~valid,
        "terminals": torch.zeros(s, h, dtype=torch.bool),
        "truncations": torch.zeros(s, h, dtype=torch.bool),
        "starts": torch.zeros(s, h, dtype=torch.bool),
        "valid": valid,
        "action_masks": None,
        "agent_ids": torch.zeros(s, h, dtype=torch.int64),
        "states": None,
        "rows": torch.arange(s),
        "critic_obs": torch.randn(s, h, 5, generator=g),
    }
    for key in ("values", "rewards", "next_values"):
        data[key] = torch.where(valid, data[key], 0.0)
    cfg = TrainConfig(update_epochs=1, minibatch_size=s * h, norm_adv=True)

    def update(d: dict[str, Any]) -> tuple[dict[str, torch.Tensor], float]:
        p = Policy(layout, spaces.Discrete(2), hidden_size=8, critic_input_size=5)
        p.load_state_dict(policy.state_dict())
        norm = ValueNormalizer()
        ppo_update(p, torch.optim.SGD(p.parameters(), lr=0.1), RolloutTensors(**d), cfg,
                   torch.Generator().manual_seed(2), value_norm=norm)
        return p.state_dict(), norm.mean

    clean = update(data)
    dirty = dict(data)
    for key in ("obs", "critic_obs", "log_probs"):
        junk = torch.full_like(data[key], float("nan")) if key == "log_probs" else data[key] * 0 + 1e4
        mask = valid.reshape(s, h, *([1] * (data[key].dim() - 2)))
        dirty[key] = torch.where(mask, data[key], junk)
    dirty["actions"] = torch.where(valid, data["actions"], 1 - data["actions"])
    again = update(dirty)
    assert clean[1] == again[1]
    for name in clean[0]:
        assert torch.equal(clean[0][name], again[0][name]), name


# ------------------------------------------------------------------------------------------------------------
# Learning
# ------------------------------------------------------------------------------------------------------------


def test_mappo_solves_the_coordination_game() -> None:
    result = train(
        TrainConfig(algo="mappo",
            env="coordination",
            total_steps=6_000,
            num_envs=8,
            horizon=16,
            minibatch_size=256,
            learning_rate=3e-3,
            seed=0,
            eval_episodes=20,
            log_interval=60,
        )
    )
    assert result.config.algo == "mappo" and result.config.agent_ids
    assert result.evaluation is not None and result.evaluation["mean_return"] == 8.0  # random: 4, no ids: 0


def test_simple_tag_trains_heterogeneous_agents_with_team_statistics(tmp_path: Path) -> None:
    cfg = TrainConfig(algo="mappo",
        env="mpe2.simple_tag_v3",
        env_kwargs={"max_cycles": 10},
        total_steps=1_600,
        num_envs=4,
        horizon=10,
        minibatch_size=160,
        run_dir=str(tmp_path),
        log_interval=0.0,
        tensorboard=False,
    )
    trainer = trainer_class(cfg)(cfg)
    assert isinstance(trainer, MAPPOTrainer) and trainer.critic_mode == "state"
    assert trainer.env_info.groups == ("adversary", "agent")  # predators (obs 16) and prey (obs 14), padded
    result = trainer.train()
    names = {r["name"] for r in read_scalars(tmp_path)}
    assert {"teams/adversary/episode_return", "teams/agent/episode_return", "charts/team_return"} <= names
    assert {f"agents/adversary_{i}/episode_return" for i in range(3)} | {"agents/agent_0/episode_return"} <= names
    assert result.global_step >= 1_600
    assert trainer.acting.forward.num_traces >= 1  # acting with the centralized critic's input replays a trace


def test_knights_archers_zombies_agents_die_mid_episode() -> None:
    cfg = TrainConfig(algo="mappo",
        env="pettingzoo.butterfly.knights_archers_zombies_v11",
        env_kwargs={"max_cycles": 60, "line_death": True},
        total_steps=1_200,
        num_envs=2,
        horizon=30,
        minibatch_size=120,
        log_interval=0.0,
    )
    trainer = MAPPOTrainer(cfg)
    deaths = []
    original = trainer._finish

    def spy(carry: Any) -> None:  # an agent whose episode ends while others of its env still act
        ended = (carry.terminals & ~carry.truncations).reshape(-1, 4)
        live = carry.masks.reshape(-1, 4)
        deaths.append(bool((ended.any(1) & live.any(1)).any()))
        original(carry)

    trainer._finish = spy  # type: ignore[method-assign]
    result = trainer.train()
    assert result.global_step >= 1_200 and trainer.critic_mode == "state" and any(deaths)
    scalars = trainer._scalars({}, 1, 1.0)
    assert {"charts/team_return", "teams/archer/episode_return", "teams/knight/episode_return"} <= set(scalars)


# ------------------------------------------------------------------------------------------------------------
# Value normalization
# ------------------------------------------------------------------------------------------------------------


def test_value_normalizer_tracks_debiased_statistics() -> None:
    norm = ValueNormalizer(beta=0.9)
    assert (norm.mean, norm.std) == (0.0, 1.0)
    x = torch.tensor([1.0, 3.0, 5.0, 7.0])
    norm.update(x)  # the first update is exactly the batch's statistics
    assert norm.mean == pytest.approx(4.0) and norm.std == pytest.approx(float(x.std(unbiased=False)))
    y = torch.randn(7)
    assert torch.allclose(norm.denormalize(norm.normalize(y)), y, atol=1e-6)
    norm.update(torch.empty(0))
    assert norm.mean == pytest.approx(4.0)
    for _ in range(200):
        norm.update(torch.full((8,), 100.0))
    assert norm.mean == pytest.approx(100.0, rel=1e-6) and norm.std == pytest.approx(0.01)  # floor: epsilon


def test_the_acting_path_denormalizes_exactly_as_the_tensor_transform_and_follows_every_change() -> None:
    norm = ValueNormalizer(beta=0.9)
    buffer = CriticBuffer(4, 8, 32, (3,), np.float32, (), np.int64, value_norm=norm)
    values = np.random.default_rng(0).normal(size=64).astype(np.float32) * 3

    def tensor_transform() -> np.ndarray:
        return norm.denormalize(torch.from_numpy(values)).numpy()

    assert np.array_equal(buffer.denormalize(values), values)  # (0, 1) before the first update
    for batch in ([1.0, 3.0, 5.0, 7.0], [-40.0, 2.5], [1e4, -1e4, 3.0]):
        norm.update(torch.tensor(batch))  # each update changes the statistics the acting path reads
        assert norm.affine() == (norm.mean, norm.std)
        assert np.array_equal(buffer.denormalize(values), tensor_transform())
    other = ValueNormalizer(beta=0.9)
    other.update(torch.tensor([100.0, 200.0]))
    norm.load_state_dict(other.state_dict())  # a checkpoint restored in place
    assert norm.affine() == (other.mean, other.std)
    assert np.array_equal(buffer.denormalize(values), tensor_transform())
    norm.epsilon = 1e6  # the variance floor is read on every call too
    assert norm.affine()[1] == 1000.0 and np.array_equal(buffer.denormalize(values), tensor_transform())
    norm.epsilon = 1e-4
    with torch.no_grad():
        norm.running_mean.add_(3.0)  # a write in place between updates
    assert norm.affine() == (norm.mean, norm.std) and np.array_equal(buffer.denormalize(values), tensor_transform())
    expected = (norm.running_mean.item() / norm.debias.item(), norm.std)
    assert norm.affine() == pytest.approx(expected)
    norm.running_mean = torch.tensor(0.5, dtype=torch.float64) * norm.debias  # a buffer replaced: mean 0.5
    assert norm.affine()[0] == pytest.approx(0.5) and np.array_equal(buffer.denormalize(values), tensor_transform())
    norm.running_mean.data.mul_(2.0)  # writes that skip the version counter (as collectives make) are seen too
    norm.running_mean_sq.numpy()[...] *= 3.0
    assert norm.affine() == pytest.approx((1.0, math.sqrt(3 * other.running_mean_sq.item() / other.debias.item()
                                                          - 1.0)))
    assert np.array_equal(buffer.denormalize(values), tensor_transform())
    copied = copy.deepcopy(norm)  # a copy reads its own buffers
    with torch.no_grad():
        copied.running_mean.zero_()
    assert copied.affine()[0] == 0.0 and norm.affine()[0] == pytest.approx(1.0)
    popart = PopArt(torch.nn.Linear(4, 1))
    popart.update(torch.tensor([2.0, 4.0, 9.0]))
    assert popart.affine() == (popart.mean, popart.std) and popart.mean == pytest.approx(5.0)


def test_popart_preserves_the_denormalized_outputs() -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 1)
    norm = PopArt(layer)
    x = torch.randn(16, 4)
    for batch in (torch.randn(32) * 10 + 50, torch.randn(32) * 0.1 - 3, torch.randn(32) * 100):
        before = norm.denormalize(layer(x)).detach()
        norm.update(batch)
        assert torch.allclose(norm.denormalize(layer(x)).detach(), before, rtol=1e-4, atol=1e-3)
    assert set(norm.state_dict()) == {"running_mean", "running_mean_sq", "debias"}


def test_popart_rescales_the_residual_critic_output_exactly() -> None:
    torch.manual_seed(1)
    layout = compile_layout(spaces.Box(-1.0, 1.0, (3,), np.float32))
    policy = Policy(layout, spaces.Discrete(2), critic_input_size=8, critic_local_size=3, hidden_size=16)
    with torch.no_grad():  # the central half of the output layer away from its zero start
        policy.critic.output.weight.normal_()
    norm = PopArt(policy.critic.output)
    x = torch.randn(16, 8)
    for batch in (torch.randn(32) * 10 + 50, torch.randn(32) * 100):
        before = norm.denormalize(policy.value(None, critic_obs=x)).detach()
        norm.update(batch)
        torch.testing.assert_close(norm.denormalize(policy.value(None, critic_obs=x)).detach(), before,
                                   rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("kind", ["running", "popart"])
def test_ippo_with_value_normalization_and_mappo_with_popart(kind: str) -> None:
    ippo = train(
        TrainConfig(
            env="coordination",
            total_steps=512,
            num_envs=4,
            horizon=16,
            minibatch_size=64,
            value_norm=kind,
            log_interval=0.0,
        )
    )
    assert trainer_class(ippo.config) is MAPPOTrainer and ippo.config.algo == "ppo"
    assert getattr(ippo.policy, "critic_input_size", None) is None  # IPPO: the critic reads the actor's features
    mappo = train(
        TrainConfig(algo="mappo",
            env="coordination",
            total_steps=512,
            num_envs=4,
            horizon=16,
            minibatch_size=64,
            value_norm=kind,
            log_interval=0.0,
        )
    )
    assert mappo.policy.critic_input_size == critic_input_size(compile_layout(spaces.Box(0, 1, (2,))), 2, 1, 1)
    assert trainer_class(TrainConfig()) is Trainer


# ------------------------------------------------------------------------------------------------------------
# Env plumbing, statistics, resume, command line
# ------------------------------------------------------------------------------------------------------------


def test_global_state_env_reports_the_state_after_reset_and_every_step() -> None:
    env = GlobalStateEnv(TaggedEnv(length=4))
    _, infos = env.reset()
    assert set(infos) == {"agent_0", "agent_1"}
    assert infos["agent_0"][GLOBAL_STATE_KEY].tolist() == [env.tag, 0]
    for t in range(1, 5):
        _, rewards, _, _, infos = env.step(dict.fromkeys(env.agents, 0))
        assert set(infos) == set(rewards)  # agents that just ended get the state after their last step
        assert all(info[GLOBAL_STATE_KEY].tolist() == [env.tag, t] for info in infos.values())
    assert env.agents == [] and env.possible_agents == ["agent_0", "agent_1"]


@pytest.mark.parametrize("env_id", ["mpe2.simple_spread_v3", "mpe2.simple_tag_v3",
                                    "pettingzoo.butterfly.knights_archers_zombies_v11"])
def test_global_state_env_steps_an_aec_converted_env_fast_with_the_same_results(env_id: str) -> None:
    # AEC envs behind aec_to_parallel: behind GlobalStateEnv they keep the direct step, which returns what the
    # conversion's own step does (observations, rewards, ends, infos, agents and the state) for the same seeds and
    # actions, with agents dying mid-episode (knights_archers_zombies), and still refuses an action out of bounds.
    # MPE's state is built from the observations (simple_tag: predators and prey observe different sizes); it
    # equals what state() returns exactly.
    from shoal.emulation.parallel_step import direct_parallel_step
    from shoal.train.core.centralized import state_is_joint_observation
    from shoal.train.runs.resolve import resolve_env

    kwargs = {"line_death": True, "max_cycles": 300} if "knights" in env_id else {}
    make = resolve_env(env_id, kwargs)
    fast, plain, checked = GlobalStateEnv(make()), GlobalStateEnv(make()), GlobalStateEnv(make())
    # plain: the conversion's own step and state() itself (as an env snapshot saved before the direct step)
    plain._step = plain._checked_step = None
    plain._joint = False
    assert type(fast._step) is type(direct_parallel_step(make(), actions_checked=False))
    assert checked._checked_step.sub_step == checked.unwrapped.step  # no checking wrapper left
    assert fast._joint == state_is_joint_observation(fast.unwrapped) == env_id.startswith("mpe2.")
    # the emulator checks every action itself, so it steps the wrapper without PettingZoo's checking wrappers, and
    # still refuses an action out of range
    emulator = PettingZooEmulator(GlobalStateEnv(make()))
    assert emulator._parallel_step.__func__ is GlobalStateEnv.step_checked
    assert pickle.loads(pickle.dumps(emulator))._parallel_step.__func__ is GlobalStateEnv.step_checked
    emulator.reset(seed=0)
    with pytest.raises(APIUsageError):
        emulator.step(np.full(emulator.num_agents, 99))
    rng = np.random.default_rng(0)
    partial_ends = 0
    for seed in (1, 2):
        a, b, c = fast.reset(seed=seed), plain.reset(seed=seed), checked.reset(seed=seed)
        np.testing.assert_equal(a, b)
        np.testing.assert_equal(c, b)
        while fast.agents:
            actions = {agent: int(rng.integers(fast.action_space(agent).n)) for agent in fast.agents}
            got, expected, got_checked = fast.step(actions), plain.step(dict(actions)), checked.step_checked(actions)
            np.testing.assert_equal(got, expected)
            np.testing.assert_equal(got_checked, expected)
            assert [list(d) for d in got] == [list(d) for d in expected]  # the same agents, in the same order
            assert [list(d) for d in got_checked] == [list(d) for d in expected]
            assert fast.agents == plain.agents == checked.agents
            partial_ends += bool(fast.agents) and len(fast.agents) < len(actions)
        assert not plain.agents
    assert partial_ends > 0 or "knights" not in env_id  # agents died while others played on
    fast.reset(seed=3)
    with pytest.raises(AssertionError):
        fast.step({agent: 99 for agent in fast.agents})  # out of bounds: the check is kept


def test_the_emulator_keeps_the_checked_step_of_continuous_actions_and_of_a_subclass_that_overrides_step() -> None:
    from mpe2 import simple_spread_v3

    continuous = PettingZooEmulator(GlobalStateEnv(simple_spread_v3.parallel_env(continuous_actions=True)))
    assert continuous._parallel_step.__func__ is GlobalStateEnv.step  # Box actions: the wrappers' checks stay

    class Shaped(GlobalStateEnv):
        def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
            obs, rewards, terminations, truncations, infos = super().step(actions)
            return obs, {agent: r + 100.0 for agent, r in rewards.items()}, terminations, truncations, infos

    emulator = PettingZooEmulator(Shaped(simple_spread_v3.parallel_env()))
    assert emulator._parallel_step.__func__ is Shaped.step
    emulator.reset(seed=0)
    _, rewards, *_ = emulator.step(np.zeros(emulator.num_agents, np.int64))
    assert (rewards > 50).all()  # the subclass's step ran


def test_mappo_resume_equals_uninterrupted_training(tmp_path: Path) -> None:
    def config(run_dir: Path, **overrides: Any) -> TrainConfig:
        return TrainConfig(algo="mappo",
            env="squad",
            env_kwargs={"max_steps": 6},
            max_agents=4,
            total_steps=96 * 5,
            num_envs=2,
            horizon=8,
            batch_size=96,
            minibatch_size=48,
            seed=4,
            run_dir=str(run_dir),
            checkpoint_interval=1,
            log_interval=0.0,
            tensorboard=False,
            value_norm="popart",
            **overrides,
        )

    class Crash(Exception):
        pass

    def crash(record: Any) -> None:
        if record.scalars["charts/update"] == 2:
            raise Crash

    whole = train(config(tmp_path / "whole"), state_squad)
    with pytest.raises(Crash):
        train(config(tmp_path / "split"), state_squad, callbacks=[crash])
    resumed = train(config(tmp_path / "split", resume=True), state_squad)
    assert resumed.exact_resume and resumed.updates == whole.updates
    for name, value in whole.policy.state_dict().items():
        assert torch.equal(value, resumed.policy.state_dict()[name]), name


def test_a_run_saved_before_the_residual_critic_resumes_with_its_single_mlp(tmp_path: Path) -> None:
    from shoal.train.runs.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint

    def config(**overrides: Any) -> TrainConfig:
        fields: dict[str, Any] = dict(algo="mappo", env="squad", env_kwargs={"max_steps": 6}, total_steps=64,
                                      num_envs=2, horizon=8, minibatch_size=32, seed=1, run_dir=str(tmp_path),
                                      checkpoint_interval=1, log_interval=0.0, tensorboard=False)
        return TrainConfig(**{**fields, **overrides})

    train(config(critic_residual=False), state_squad)
    # what a run saved before the option holds: no critic_residual in its config, no critic_local_size
    for path in list_checkpoints(tmp_path):
        payload = load_checkpoint(path)
        assert "critic_local_size" not in payload["policy_config"]
        payload["config"] = {k: v for k, v in payload["config"].items() if k != "critic_residual"}
        save_checkpoint(path, payload)
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["critic_residual"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    resumed = train(config(total_steps=128, resume=True), state_squad)  # the caller leaves critic_residual unset
    assert resumed.global_step >= 128 and not isinstance(resumed.policy.critic, ResidualCritic)
    assert resumed.config.critic_residual is False
    with pytest.raises(CheckpointError, match="critic_residual"):  # asked for explicitly: refused, as any change
        train(config(total_steps=192, resume=True, critic_residual=True), state_squad)


def test_a_given_policy_sets_the_critic_design_the_run_records() -> None:
    cfg = TrainConfig(algo="mappo", env="tagged", total_steps=32, num_envs=2, minibatch_size=16, critic_input="state",
                      **FAST)
    probe = MAPPOTrainer(cfg, env_fn=TaggedEnv)
    try:
        size, local = probe.critic_size, probe.central.local_size
        one_mlp = Policy.from_env(probe.vecenv, critic_input_size=size, num_agent_ids=2)
        residual = Policy.from_env(probe.vecenv, critic_input_size=size, critic_local_size=local, num_agent_ids=2)
        wrong = Policy.from_env(probe.vecenv, critic_input_size=size, critic_local_size=local - 1, num_agent_ids=2)
    finally:
        probe.close()
    for policy, design in ((one_mlp, False), (residual, True)):
        trainer = MAPPOTrainer(cfg, env_fn=TaggedEnv, policy=policy)
        assert trainer.config.critic_residual is design  # what the run's config.json and checkpoints record
        trainer.close()
    with pytest.raises(APIUsageError, match=f"critic_local_size={local}"):
        MAPPOTrainer(cfg, env_fn=TaggedEnv, policy=wrong)
    with pytest.raises(APIUsageError, match="critic_residual=True"):
        MAPPOTrainer(cfg.replace(critic_residual=True), env_fn=TaggedEnv, policy=one_mlp)


def test_cli_trains_mappo_with_its_defaults(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    code = main(
        [
            "train",
            "coordination",
            "--algo",
            "mappo",
            "--total-steps",
            "512",
            "--num-envs",
            "4",
            "--minibatch-size",
            "64",
            "--run-dir",
            str(run_dir),
            "--no-tensorboard",
            "--json",
        ]
    )
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and payload["ok"] and payload["algo"] == "mappo"
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["update_epochs"] == ALGO_DEFAULTS["mappo"]["update_epochs"] and saved["agent_ids"] is True
    assert saved["minibatch_size"] == 64  # flags given on the command line win
    names = {r["name"] for r in read_scalars(run_dir)}
    assert {"agents/agent_0/episode_return", "teams/agent/episode_return", "charts/value_norm_std"} <= names
    code = main(["eval", str(run_dir), "--episodes", "4", "--json"])  # the actor alone evaluates
    assert code == 0 and json.loads(capsys.readouterr().out.strip().splitlines()[-1])["ok"]


@pytest.mark.parametrize("residual", [True, False])
def test_mappo_critic_starts_from_the_slots_own_columns_unless_asked_for_one_mlp(residual: bool) -> None:
    cfg = TrainConfig(algo="mappo", env="tagged", total_steps=64, num_envs=2, minibatch_size=16, critic_input="state",
                      critic_residual=None if residual else False, **FAST)
    trainer = MAPPOTrainer(cfg, env_fn=TaggedEnv)
    try:
        policy = trainer.policy
        assert isinstance(policy.critic, ResidualCritic) is residual
        assert trainer.critic_size == 2 + 3 + 2 + 1  # [state | own obs | slot one-hot | type one-hot]
        assert trainer.central is not None and trainer.central.local_size == 3 + 2 + 1
        x = torch.randn(8, trainer.critic_size)
        ids = torch.arange(8) % 2
        moved = x.clone()
        moved[:, :2] += 5.0  # the global state only
        same = torch.equal(policy.value(None, agent_ids=ids, critic_obs=moved),
                           policy.value(None, agent_ids=ids, critic_obs=x))
        assert same is residual  # the residual's output starts at zero; one MLP reads the state from the start
        trainer.train()
        assert trainer.global_step >= 64
    finally:
        trainer.close()


def test_state_critic_input_needs_a_state() -> None:
    with pytest.raises(APIUsageError, match="no usable global state"):
        MAPPOTrainer(TrainConfig(algo="mappo", env="squad", critic_input="state", num_envs=2, horizon=8,
                                 minibatch_size=32))


def test_dashboard_shows_team_and_agent_returns() -> None:
    import io

    from shoal.train.runs.logger import Dashboard, LogRecord

    scalars = {
        "charts/team_return": 3.0,
        "teams/adversary/episode_return": 4.5,
        "teams/agent/episode_return": -1.5,
        "agents/adversary_0/episode_return": 1.5,
        "agents/agent_0/episode_return": -1.5,
    }
    lines = Dashboard(io.StringIO(), "t", live=True).render(LogRecord(1, scalars, 10, 1.0))
    assert " teams  adversary 4.5   agent -1.5   (all 3)" in lines
    assert " agents adversary_0 1.5   agent_0 -1.5" in lines
    stream = io.StringIO()
    Dashboard(stream, "t", live=False)(LogRecord(1, scalars, 10, 1.0))
    assert "teams  adversary 4.5" in stream.getvalue()
