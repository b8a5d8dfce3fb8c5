"""The default Policy: builds for every space of the zoo, heads per action kind, masks, multi-agent options."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from hypothesis import HealthCheck, given, settings
from torch.distributions import Categorical, Normal

from shoal.emulation import ActionLayout, compile_layout, emulate
from shoal.errors import APIUsageError, SpaceError
from shoal.policies import (
    Policy,
    PolicyOutput,
    ResidualCritic,
    centralized_input,
    centralized_input_size,
    encoder_kind,
)
from tests.policies.helpers import ACTION_SPACES, action_layout, block_masks, random_masks, sample_rows
from tests.strategies import nested_spaces
from tests.zoo import SPACE_ZOO

SMALL = dict(hidden_size=32, embedding_dim=4)


def _expected_action(kind: str, batch: tuple[int, ...]) -> tuple[tuple[int, ...], torch.dtype]:
    return {
        "discrete": (batch, torch.int64),
        "multi_discrete": ((*batch, 3), torch.int64),
        "continuous": ((*batch, 3), torch.float32),
        "hybrid": ((*batch, 3), torch.float32),
    }[kind]


@pytest.mark.parametrize("kind", sorted(ACTION_SPACES))
@pytest.mark.parametrize("name", sorted(SPACE_ZOO))
def test_builds_and_runs_forward_backward_for_the_zoo(name: str, kind: str) -> None:
    torch.manual_seed(0)
    policy = Policy(compile_layout(SPACE_ZOO[name]), action_layout(kind), **SMALL)
    obs = sample_rows(SPACE_ZOO[name], 3)
    out = policy(obs)
    assert isinstance(out, PolicyOutput) and out.state is None
    shape, dtype = _expected_action(kind, (3,))
    assert out.action.shape == shape and out.action.dtype == dtype
    for field in (out.log_prob, out.entropy, out.value):
        assert field.shape == (3,) and field.dtype == torch.float32 and torch.isfinite(field).all()
    (out.log_prob.sum() + out.entropy.sum() + out.value.square().sum()).backward()
    for pname, param in policy.encoder.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), pname
    space = ActionLayout(ACTION_SPACES[kind]).flat_space
    assert all(space.contains(a) for a in policy.clip_action(out.action).numpy().astype(space.dtype))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nested_spaces)
def test_builds_for_random_nested_spaces(space: spaces.Space) -> None:
    policy = Policy(compile_layout(space), action_layout("hybrid"), hidden_size=8, embedding_dim=2)
    out = policy(sample_rows(space, 2))
    assert torch.isfinite(out.log_prob).all() and torch.isfinite(out.value).all()
    (out.log_prob.sum() + out.value.sum()).backward()


def test_huge_discrete_leaves_fall_back_to_a_scaled_vector() -> None:
    space = spaces.Dict({"id": spaces.Discrete(2**40), "codes": spaces.MultiDiscrete([2**20] * 3)})
    layout = compile_layout(space)
    assert [encoder_kind(leaf) for leaf in layout.leaves] == ["vector", "vector"]
    out = Policy(layout, action_layout("discrete"), **SMALL)(sample_rows(space, 3))
    assert torch.isfinite(out.logits).all()


def test_encoder_kinds_follow_the_leaf_kinds() -> None:
    kinds = Policy(compile_layout(SPACE_ZOO["nested"]), action_layout("discrete")).encoder.kinds
    assert kinds == {
        "agent.pos": "vector", "agent.hp": "embedding", "agent.inventory.0": "vector",
        "agent.inventory.1": "embedding", "map": "image", "others.0.pos": "vector", "others.0.kind": "embedding",
        "others.1.pos": "vector", "others.1.kind": "embedding",
    }
    layout = compile_layout(spaces.Dict({"chw": spaces.Box(0, 255, (4, 84, 84), np.uint8),
                                         "tiny": spaces.Box(0, 255, (4, 4, 3), np.uint8),
                                         "glyphs": spaces.Box(0, 5976, (21, 79), np.int16)}))
    # (leaves in key order) a 21x79 map stays one linear layer; a uint8 grid too small for the CNN holds codes
    assert [encoder_kind(leaf) for leaf in layout.leaves] == ["image", "vector", "embedding"]


def test_from_an_emulated_env_acts_in_it() -> None:
    env = emulate(gym.make("CartPole-v1"))
    policy = Policy.from_env(env, hidden_size=16)
    obs, _ = env.reset(seed=0)
    for _ in range(5):
        out = policy(torch.from_numpy(obs))
        obs, *_ = env.step(out.action.numpy())
    with pytest.raises(APIUsageError, match="obs_layout"):
        Policy.from_env(gym.make("CartPole-v1"))


@pytest.mark.parametrize("kind", ["discrete", "multi_discrete", "hybrid"])
def test_masked_actions_are_never_chosen_and_have_zero_probability(kind: str) -> None:
    torch.manual_seed(1)
    layout = action_layout(kind)
    policy = Policy(compile_layout(SPACE_ZOO["box_float32"]), layout, **SMALL)
    nvec = [int(layout.flat_space.n)] if kind == "discrete" else [int(n) for n in layout.nvec]
    masks = block_masks(16, nvec, seed=1).repeat(500, 1)
    obs = sample_rows(SPACE_ZOO["box_float32"], 16).repeat(500, 1)
    with torch.no_grad():
        out = policy(obs, action_masks=masks)
    choices = out.action.reshape(len(obs), -1)[:, : len(nvec)].long()
    offsets = torch.tensor([0, *np.cumsum(nvec)[:-1].tolist()])
    assert masks.gather(1, choices + offsets).all(), "a masked action was sampled"
    logits = out.logits[:, : sum(nvec)]
    probs = torch.cat([torch.softmax(part, -1) for part in logits.split(nvec, -1)], -1)
    assert (probs[~masks] == 0).all()
    greedy = policy(obs, action_masks=masks, deterministic=True).action.reshape(len(obs), -1)[:, : len(nvec)]
    assert masks.gather(1, greedy.long() + offsets).all()


def test_log_prob_of_given_actions_matches_torch_distributions() -> None:
    torch.manual_seed(2)
    obs = sample_rows(SPACE_ZOO["nested"], 8)
    layout = compile_layout(SPACE_ZOO["nested"])

    policy = Policy(layout, action_layout("discrete"), **SMALL)
    masks = random_masks(8, 5)
    out = policy(obs, action_masks=masks)
    ref = Categorical(logits=out.logits.masked_fill(~masks, float("-inf")))
    torch.testing.assert_close(out.log_prob, ref.log_prob(out.action))
    torch.testing.assert_close(policy(obs, action_masks=masks, action=out.action).log_prob, out.log_prob)

    policy = Policy(layout, action_layout("multi_discrete"), **SMALL)
    out = policy(obs)
    parts = out.logits.split([3, 5, 2], -1)
    expected = sum(Categorical(logits=p).log_prob(a) for p, a in zip(parts, out.action.T, strict=True))
    torch.testing.assert_close(out.log_prob, expected)

    for std in ("state_independent", "state_dependent"):
        policy = Policy(layout, action_layout("continuous"), continuous_std=std, **SMALL)
        out = policy(obs)
        head = policy.head
        features = policy.encode(obs)
        log_std = head.log_std(features).clamp(-5, 2) if std == "state_dependent" else head.log_std_param
        ref = Normal(out.logits, head.half_range * log_std.exp())
        torch.testing.assert_close(out.log_prob, ref.log_prob(out.action).sum(-1))
        torch.testing.assert_close(out.entropy, ref.entropy().sum(-1))


def test_box_actions_are_scaled_to_the_bounds_and_clipped_only_on_request() -> None:
    space = spaces.Box(np.array([0.0, -10.0], np.float32), np.array([100.0, 10.0], np.float32), dtype=np.float32)
    policy = Policy(compile_layout(SPACE_ZOO["box_float32"]), ActionLayout(space), **SMALL)
    obs = sample_rows(SPACE_ZOO["box_float32"], 2000)
    with torch.no_grad():
        out = policy(obs)
    assert torch.allclose(out.logits.mean(0), torch.tensor([50.0, 0.0]), atol=2.0)  # centred
    assert out.action[:, 0].std() > 20  # std = half range at init
    assert ((out.action < 0) | (out.action > 100)).any()  # unsquashed
    clipped = policy.clip_action(out.action)
    assert (clipped[:, 0] >= 0).all() and (clipped[:, 0] <= 100).all() and (clipped[:, 1].abs() <= 10).all()


def test_deterministic_takes_the_mode() -> None:
    obs = sample_rows(SPACE_ZOO["box_float32"], 5)
    policy = Policy(compile_layout(SPACE_ZOO["box_float32"]), action_layout("discrete"), **SMALL)
    out = policy(obs, deterministic=True)
    assert torch.equal(out.action, out.logits.argmax(-1))
    policy = Policy(compile_layout(SPACE_ZOO["box_float32"]), action_layout("continuous"), **SMALL)
    out = policy(obs, deterministic=True)
    assert torch.equal(out.action, out.logits)


def test_non_recurrent_policies_accept_any_leading_dims() -> None:
    policy = Policy(compile_layout(SPACE_ZOO["mixed_dtypes"]), action_layout("multi_discrete"), **SMALL)
    obs = sample_rows(SPACE_ZOO["mixed_dtypes"], 6)
    flat_out = policy(obs, deterministic=True)
    seq_out = policy(obs.reshape(2, 3, -1), deterministic=True)
    assert seq_out.action.shape == (2, 3, 3) and seq_out.value.shape == (2, 3)
    torch.testing.assert_close(seq_out.logits.reshape(6, -1), flat_out.logits)


def test_agent_id_embedding() -> None:
    layout = compile_layout(SPACE_ZOO["box_float32"])
    policy = Policy(layout, action_layout("discrete"), num_agent_ids=3, **SMALL)
    obs = sample_rows(SPACE_ZOO["box_float32"], 1).repeat(3, 1)
    out = policy(obs, agent_ids=torch.tensor([0, 1, 2]))
    assert not torch.allclose(out.logits[0], out.logits[1])  # same obs, different agents
    empty_slot = policy(obs[:1], agent_ids=torch.tensor([-1]))  # the -1 of empty slots is clamped
    torch.testing.assert_close(empty_slot.value, out.value[:1])
    with pytest.raises(APIUsageError, match="agent_ids"):
        policy(obs)
    with pytest.raises(APIUsageError, match="agent_ids has shape"):
        policy(obs, agent_ids=torch.zeros(2, dtype=torch.long))


def test_centralized_critic_reads_its_own_input() -> None:
    layout = compile_layout(SPACE_ZOO["mixed_dtypes"])
    envs, slots = 2, 3
    obs = sample_rows(SPACE_ZOO["mixed_dtypes"], envs * slots).reshape(envs, slots, -1)
    masks = torch.tensor([[True, True, False], [True, False, True]])
    critic_obs = centralized_input(layout, obs, masks)
    width = centralized_input_size(layout, slots)
    assert critic_obs.shape == (envs, slots, width)
    assert torch.equal(critic_obs[:, 0], critic_obs[:, 2])  # one joint view per env
    per_slot = width // slots - 1
    assert (critic_obs[0, 0, 2 * per_slot : 3 * per_slot] == 0).all()  # the dead slot is zeroed
    assert torch.equal(critic_obs[0, 0, -slots:], masks[0].float())

    policy = Policy(layout, action_layout("multi_discrete"), critic_input_size=width, num_agent_ids=slots, **SMALL)
    ids = torch.arange(slots).repeat(envs, 1)
    out = policy(obs.reshape(envs * slots, -1), agent_ids=ids.reshape(-1), critic_obs=critic_obs.reshape(-1, width))
    assert out.value.shape == (envs * slots,)
    other = critic_obs.clone()
    other[..., :-slots] += 1.0
    changed = policy.value(None, agent_ids=ids.reshape(-1), critic_obs=other.reshape(-1, width))
    assert not torch.allclose(changed, out.value)  # the value depends on the centralized input...
    same_actor = policy(obs.reshape(envs * slots, -1), agent_ids=ids.reshape(-1), action=out.action)
    torch.testing.assert_close(same_actor.log_prob, out.log_prob)  # ...the actor does not
    assert same_actor.value is None  # acting without critic_obs
    with pytest.raises(APIUsageError, match="critic_obs"):
        policy.value(obs.reshape(envs * slots, -1), agent_ids=ids.reshape(-1))


def test_residual_critic_starts_local_and_learns_to_read_the_global_columns() -> None:
    torch.manual_seed(0)
    layout = compile_layout(spaces.Box(-1.0, 1.0, (3,), np.float32))
    width, local = 10, 4  # columns 0-5 global, 6-9 the slot's own
    policy = Policy(layout, action_layout("discrete"), critic_input_size=width, critic_local_size=local,
                    num_agent_ids=2, **SMALL)
    assert isinstance(policy.critic, ResidualCritic) and policy.config["critic_local_size"] == local
    x = torch.randn(256, width)
    ids = torch.arange(256) % 2
    shifted = x.clone()
    shifted[:, :width - local] = torch.randn(256, width - local)
    value = policy.value(None, agent_ids=ids, critic_obs=x)
    # at the start the value reads the local columns only: not the global ones, not the agent-id embedding
    torch.testing.assert_close(policy.value(None, agent_ids=ids, critic_obs=shifted), value, rtol=0, atol=0)
    torch.testing.assert_close(policy.value(None, agent_ids=1 - ids, critic_obs=x), value, rtol=0, atol=0)
    local_shift = x.clone()
    local_shift[:, -local:] += 1.0
    assert not torch.allclose(policy.value(None, agent_ids=ids, critic_obs=local_shift), value)
    # a target only the global columns explain: the residual learns it
    target = 3.0 * x[:, 0]
    optimizer = torch.optim.Adam(policy.parameters(), lr=3e-3)
    first = None
    for _ in range(300):
        loss = (policy.value(None, agent_ids=ids, critic_obs=x) - target).pow(2).mean()
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05 * first
    assert not torch.allclose(policy.value(None, agent_ids=ids, critic_obs=shifted),
                              policy.value(None, agent_ids=ids, critic_obs=x), atol=1e-2)
    # the config rebuilds the same network
    copy = Policy(layout, action_layout("discrete"), **policy.config)
    copy.load_state_dict(policy.state_dict())
    torch.testing.assert_close(copy.value(None, agent_ids=ids, critic_obs=x),
                               policy.value(None, agent_ids=ids, critic_obs=x), rtol=0, atol=0)


@pytest.mark.parametrize("kwargs", [dict(critic_local_size=2), dict(critic_input_size=4, critic_local_size=5),
                                    dict(critic_input_size=4, critic_local_size=0)])
def test_residual_critic_needs_local_columns_within_the_critic_input(kwargs: dict) -> None:
    with pytest.raises(APIUsageError, match="critic_local_size"):
        Policy(compile_layout(spaces.Box(-1.0, 1.0, (3,))), action_layout("discrete"), **kwargs, **SMALL)
    with pytest.raises(APIUsageError, match="local_size=5"):  # its columns must end before the embedding
        ResidualCritic(8, 5, 16, 4, torch.nn.ReLU)


def test_device_argument_and_state_dict_round_trip() -> None:
    layout = compile_layout(SPACE_ZOO["nested"])
    policy = Policy(layout, action_layout("hybrid"), device="cpu", **SMALL)
    assert policy.device == torch.device("cpu") and policy.initial_state(4) is None
    copy = Policy(layout, action_layout("hybrid"), device=torch.device("cpu"), **SMALL)
    copy.load_state_dict(policy.state_dict())
    obs = sample_rows(SPACE_ZOO["nested"], 4)
    torch.testing.assert_close(copy(obs, deterministic=True).logits, policy(obs, deterministic=True).logits)


def test_tanh_activation_bounds_every_hidden_feature_and_rebuilds_from_its_config() -> None:
    space = spaces.Box(-1e3, 1e3, (5,), np.float32)  # large inputs: ReLU features would reach the hundreds
    layout = compile_layout(space)
    policy = Policy(layout, action_layout("discrete"), activation="tanh", **SMALL)
    obs = torch.from_numpy(np.stack([space.sample() for _ in range(64)]))
    features = policy.trunk(policy.encoder(obs))
    assert features.abs().max() <= 1.0 and policy.critic_trunk(policy.critic_encoder(obs)).abs().max() <= 1.0
    relu = Policy(layout, action_layout("discrete"), **SMALL)
    assert relu.trunk(relu.encoder(obs)).min() == 0.0  # ReLU, the default: features clamped at 0 instead
    assert "activation" not in relu.config  # configs saved before the option rebuild the ReLU network
    copy = Policy(layout, action_layout("discrete"), **policy.config)
    copy.load_state_dict(policy.state_dict())
    torch.testing.assert_close(copy(obs, deterministic=True).logits, policy(obs, deterministic=True).logits)
    with pytest.raises(APIUsageError, match="activation='gelu'"):
        Policy(layout, action_layout("discrete"), activation="gelu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda() -> None:  # pragma: no cover - only where a GPU exists
    layout = compile_layout(SPACE_ZOO["nethack"])
    policy = Policy(layout, action_layout("multi_discrete"), recurrent=True, device="cuda")
    obs = sample_rows(SPACE_ZOO["nethack"], 4).cuda()
    out = policy(obs, policy.initial_state(4), done=torch.zeros(4, dtype=torch.bool, device="cuda"))
    assert out.action.device.type == "cuda" and out.state[0].device.type == "cuda"


# --------------------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------------------


def test_wrong_observation_width_or_dtype_names_leaves_and_shape() -> None:
    layout = compile_layout(SPACE_ZOO["nethack"])
    policy = Policy(layout, action_layout("discrete"), **SMALL)
    with pytest.raises(SpaceError) as info:
        policy(torch.zeros(2, layout.flat_size - 8, dtype=torch.uint8))
    assert f"[*batch, {layout.flat_size}]" in str(info.value)
    assert "obs['glyphs']: int16[21, 79]" in str(info.value)
    with pytest.raises(SpaceError, match=r"dtype torch\.uint8"):
        policy(torch.zeros(2, layout.flat_size, dtype=torch.float32))
    with pytest.raises(SpaceError, match=r"torch\.Tensor"):
        policy(np.zeros((2, layout.flat_size), np.uint8))


def test_layouts_the_encoder_cannot_handle_are_space_errors() -> None:
    space = spaces.Dict({"ok": spaces.Discrete(3), "empty": spaces.Box(0, 1, (0, 4), np.float32)})
    with pytest.raises(SpaceError, match=r"obs\['empty'\].*shape \(0, 4\)"):
        Policy(compile_layout(space), action_layout("discrete"))


def test_bad_masks_actions_and_options_are_usage_errors() -> None:
    layout = compile_layout(SPACE_ZOO["box_float32"])
    policy = Policy(layout, action_layout("multi_discrete"), **SMALL)
    obs = sample_rows(SPACE_ZOO["box_float32"], 2)
    with pytest.raises(APIUsageError, match=r"expected \[2, 10\]"):
        policy(obs, action_masks=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(APIUsageError, match=r"expected \[2, 3\]"):
        policy(obs, action=torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(APIUsageError, match="continuous_std"):
        Policy(layout, action_layout("continuous"), continuous_std="learned")
    with pytest.raises(APIUsageError):
        Policy(layout, action_layout("discrete"), hidden_size=0)


# --------------------------------------------------------------------------------------------------------------
# torch.compile
# --------------------------------------------------------------------------------------------------------------


COMPILE_CASES = [
    ("box_float32", "discrete", {}),
    ("mixed_dtypes", "multi_discrete", {"num_agent_ids": 2}),
    ("nested", "hybrid", {"recurrent": True}),
    ("image_uint8", "continuous", {"continuous_std": "state_dependent"}),
]


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.parametrize(("name", "kind", "options"), COMPILE_CASES, ids=[c[0] for c in COMPILE_CASES])
def test_forward_compiles_without_graph_breaks(name: str, kind: str, options: dict) -> None:
    """fullgraph=True raises on any graph break; aot_eager traces forward and backward graphs without codegen."""
    torch._dynamo.reset()
    torch.manual_seed(3)
    policy = Policy(compile_layout(SPACE_ZOO[name]), action_layout(kind), **SMALL, **options)
    compiled = torch.compile(policy, fullgraph=True, backend="aot_eager")
    obs = sample_rows(SPACE_ZOO[name], 6)
    kw: dict = {}
    if policy.num_agent_ids:
        kw["agent_ids"] = torch.tensor([0, 1, 0, 1, 0, 1])
    if policy.head.mask_width:
        kw["action_masks"] = random_masks(6, policy.head.mask_width)
    if policy.is_recurrent:
        obs = obs.reshape(3, 2, -1)
        kw = {key: value.reshape(3, 2, *value.shape[1:]) for key, value in kw.items()}
        kw["done"] = torch.tensor([[True, False], [False, True], [False, False]])
    sampled = compiled(obs, **kw)
    evaluated = compiled(obs, **kw, action=sampled.action, deterministic=True)
    eager = policy(obs, **kw, action=sampled.action)
    torch.testing.assert_close(evaluated.log_prob, eager.log_prob)
    torch.testing.assert_close(sampled.log_prob, eager.log_prob)
    torch.testing.assert_close(evaluated.value, eager.value)
    evaluated.log_prob.sum().backward()


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_forward_compiles_with_inductor() -> None:
    """The real compiler on the smallest policy (codegen takes ~10 s on CPU)."""
    torch._dynamo.reset()
    policy = Policy(compile_layout(SPACE_ZOO["box_float32"]), action_layout("discrete"), hidden_size=8)
    compiled = torch.compile(policy, fullgraph=True)
    obs = sample_rows(SPACE_ZOO["box_float32"], 4)
    action = torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        out = compiled(obs, action=action, deterministic=True)
        ref = policy(obs, action=action)
    torch.testing.assert_close(out.log_prob, ref.log_prob)
    torch.testing.assert_close(out.logits, ref.logits)
