"""AgentSpaces on real PettingZoo spaces: padded observation rows, padded actions, per-agent limits and masks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from gymnasium import spaces

from shoal.emulation import ActionLayout
from shoal.emulation.agent_spaces import AgentSpaces, group_of, plan_actions, plan_observations
from shoal.errors import SpaceError


def plan_of(env: Any, **opts: Any) -> AgentSpaces:
    """The plan of every possible agent of a PettingZoo env."""
    agents = env.possible_agents
    return AgentSpaces({a: env.observation_space(a) for a in agents}, {a: env.action_space(a) for a in agents},
                       **opts)


def test_group_of_strips_a_trailing_index() -> None:
    assert [group_of(a) for a in ["adversary_0", "leadadversary_0", "agent_12", "player_1_x", "solo"]] == [
        "adversary", "leadadversary", "agent", "player_1_x", "solo"]


def test_simple_tag_observations_16_and_14_wide_share_one_padded_row() -> None:
    from mpe2 import simple_tag_v3

    plan = plan_of(simple_tag_v3.parallel_env())
    assert plan.obs_padded
    assert plan.obs_layout.flat_space == spaces.Box(-np.inf, np.inf, (16,), np.float32)
    assert [layout.flat_size for layout in plan.layouts] == [16, 14]
    assert {a: (s.group, s.layout_index, s.obs_layout.flat_size) for a, s in plan.specs.items()} == {
        "adversary_0": (0, 0, 16), "adversary_1": (0, 0, 16), "adversary_2": (0, 0, 16), "agent_0": (1, 1, 14)}
    assert plan.agent_groups == ["adversary", "agent"]
    assert {g: layout.flat_size for g, layout in plan.obs_layouts.items()} == {"adversary": 16, "agent": 14}
    # Every agent shares Discrete(5): no padding, no limits, no static masks.
    assert plan.action_mode == "same" and plan.action_layout.flat_space == spaces.Discrete(5)
    spec = plan.specs["agent_0"]
    assert (spec.limit, spec.static_mask, spec.mask_index, spec.discrete_n, spec.discrete_start) == (
        None, None, None, 5, 0)
    assert plan.slot_limits(4) is None


def test_agents_fitted_later_reuse_or_add_narrower_layouts_and_never_widen_the_row() -> None:
    from mpe2 import simple_tag_v3

    plan = plan_of(simple_tag_v3.parallel_env())
    discrete = ActionLayout(spaces.Discrete(5))
    same = plan.fit("agent_1", spaces.Box(-np.inf, np.inf, (14,), np.float32), discrete)
    assert (same.group, same.layout_index) == (1, 1)
    narrow = plan.fit("scout_0", spaces.Box(-1, 1, (10,), np.float32), discrete)
    assert (narrow.group, narrow.layout_index, len(plan.layouts)) == (2, 2, 3)
    assert plan.agent_groups == ["adversary", "agent", "scout"]
    with pytest.raises(SpaceError, match=r"agent 'giant_0' has observation space .*\(20,\).*does not fit"):
        plan.fit("giant_0", spaces.Box(-1, 1, (20,), np.float32), discrete)
    with pytest.raises(SpaceError, match=r"agent 'agent_2' has action space Discrete\(6\).*share Discrete\(5\)"):
        plan.fit("agent_2", spaces.Box(-1, 1, (14,), np.float32), ActionLayout(spaces.Discrete(6)))


def test_simple_world_comm_pads_discrete_actions_with_per_agent_limits() -> None:
    from mpe2 import simple_world_comm_v3

    plan = plan_of(simple_world_comm_v3.parallel_env())
    assert plan.obs_layout.flat_size == 34 and [layout.flat_size for layout in plan.layouts] == [34, 28]
    assert plan.action_mode == "discrete_pad" and plan.action_layout.flat_space == spaces.Discrete(20)
    assert {a: s.limit for a, s in plan.specs.items()} == {
        "leadadversary_0": 20, "adversary_0": 5, "adversary_1": 5, "adversary_2": 5, "agent_0": 5, "agent_1": 5}
    lead, agent = plan.specs["leadadversary_0"], plan.specs["agent_0"]
    assert lead.static_mask.tolist() == [True] * 20
    assert agent.static_mask.tolist() == [True] * 5 + [False] * 15
    assert agent.mask_index.tolist() == [0, 1, 2, 3, 4]
    assert not agent.mask_base.any(), "the env's own mask fills the agent's 5 entries; padded choices stay False"
    assert plan.slot_limits(3).tolist() == [20, 20, 20]
    assert agent.to_native(np.array(4)) == 4 and lead.to_native(np.array(19)) == 19


def test_simple_world_comm_continuous_actions_pad_to_the_widest_box() -> None:
    from mpe2 import simple_world_comm_v3

    plan = plan_of(simple_world_comm_v3.parallel_env(continuous_actions=True))
    assert plan.action_mode == "box_pad"
    assert plan.action_layout.flat_space == spaces.Box(0.0, 1.0, (9,), np.float32)
    row = np.arange(9, dtype=np.float32) / 10
    np.testing.assert_array_equal(plan.specs["adversary_0"].to_native(row), row[:5])
    np.testing.assert_array_equal(plan.specs["leadadversary_0"].to_native(row), row)
    assert plan.specs["adversary_0"].limit is None and plan.slot_limits(6) is None


def test_discrete_and_multi_discrete_pad_to_the_largest_nvec() -> None:
    from mpe2 import simple_speaker_listener_v4

    env = simple_speaker_listener_v4.parallel_env()
    assert env.action_space("speaker_0") == spaces.Discrete(3)
    plan = AgentSpaces({a: env.observation_space(a) for a in env.possible_agents},
                       {"speaker_0": env.action_space("speaker_0"), "listener_0": spaces.MultiDiscrete([2, 4])})
    assert plan.obs_layout.flat_size == 11 and [layout.flat_size for layout in plan.layouts] == [3, 11]
    assert plan.action_mode == "multi_pad" and plan.action_layout.flat_space == spaces.MultiDiscrete([3, 4])
    speaker, listener = plan.specs["speaker_0"], plan.specs["listener_0"]
    assert speaker.limit.tolist() == [3, 1] and listener.limit.tolist() == [2, 4]
    assert speaker.static_mask.tolist() == [True, True, True, True, False, False, False]
    assert listener.static_mask.tolist() == [True, True, False, True, True, True, True]
    assert speaker.mask_index.tolist() == [0, 1, 2] and listener.mask_index.tolist() == [0, 1, 3, 4, 5, 6]
    assert speaker.mask_base.tolist() == [False, False, False, True, False, False, False]
    assert speaker.to_native(np.array([2, 0])) == 2 and listener.to_native(np.array([1, 3])).tolist() == [1, 3]
    assert (speaker.discrete_n, listener.discrete_n) == (3, 0)
    assert plan.slot_limits(2).tolist() == [[3, 4], [3, 4]]


def test_knights_archers_zombies_share_one_unpadded_layout() -> None:
    from pettingzoo.butterfly import knights_archers_zombies_v11

    env = knights_archers_zombies_v11.parallel_env()
    plan = plan_of(env)
    assert not plan.obs_padded and plan.layouts == [plan.obs_layout]
    assert plan.obs_layout.flat_space == spaces.Box(-1.0, 1.0, (135,), np.float64)
    assert plan.agent_groups == ["archer", "knight"]
    assert [s.group for s in plan.specs.values()] == [0, 0, 1, 1]
    assert all(s.obs_layout is plan.obs_layout and not s.mask_in_obs for s in plan.specs.values())
    assert plan.action_mode == "same" and plan.action_layout.flat_space == spaces.Discrete(6)
    archer = plan.fit("archer_2", env.observation_space("archer_0"), ActionLayout(env.action_space("archer_0")))
    assert (archer.group, archer.layout_index, archer.discrete_n) == (0, 0, 6)
    with pytest.raises(SpaceError, match=r"agent 'zombie_0' has observation space.*same observation space"):
        plan.fit("zombie_0", spaces.Box(-2.0, 2.0, (27, 5), np.float64), ActionLayout(spaces.Discrete(6)))


def test_action_mask_entry_is_split_off_the_observation() -> None:
    from pettingzoo.classic import tictactoe_v3

    env = tictactoe_v3.env()
    plan = plan_of(env)
    spec = plan.specs["player_1"]
    assert spec.mask_in_obs and spec.obs_space == env.observation_space("player_1")
    assert list(plan.obs_layout.space.spaces) == ["observation"] and plan.obs_layout.flat_size == 18
    unsplit = plan_of(env, action_mask_key=None)
    assert not unsplit.specs["player_1"].mask_in_obs and unsplit.obs_layout.flat_size == 27


def test_incompatible_spaces_name_both_agents() -> None:
    from mpe2 import simple_tag_v3, simple_world_comm_v3
    from pettingzoo.butterfly import knights_archers_zombies_v11

    tag = simple_tag_v3.parallel_env()
    kaz = knights_archers_zombies_v11.parallel_env()
    with pytest.raises(SpaceError, match=r"agents 'agent_0' and 'knight_0' have different observation spaces"):
        plan_observations({"agent_0": tag.observation_space("agent_0"), "knight_0": kaz.observation_space("knight_0")})
    comm = simple_world_comm_v3.parallel_env(continuous_actions=True)
    layouts = {"leadadversary_0": ActionLayout(comm.action_space("leadadversary_0")),
               "knight_0": ActionLayout(kaz.action_space("knight_0"))}
    with pytest.raises(SpaceError, match=r"'leadadversary_0' and 'knight_0' have action spaces shoal cannot pad"):
        plan_actions(layouts)


def test_integer_boxes_pad_to_the_union_of_bounds_and_zero() -> None:
    layout, padded = plan_observations({"a_0": spaces.Box(-5, 3, (2,), np.int8),
                                        "b_0": spaces.Box(1, 100, (3,), np.int8)})
    assert padded and layout.flat_dtype == np.int8
    assert layout.flat_space.low.tolist() == [-5, -5, 0] and layout.flat_space.high.tolist() == [100, 100, 100]
