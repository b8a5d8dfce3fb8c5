"""The traced PPO minibatch loss: the same losses and gradients as the eager one, every time, or eager."""

from __future__ import annotations

import copy

import gymnasium as gym
import pytest
import torch
from torch import Tensor, nn

from shoal.emulation import ActionLayout, compile_layout
from shoal.errors import APIUsageError
from shoal.policies import Policy
from shoal.train import TrainConfig
from shoal.train.core.ppo import make_optimizer, minibatch_loss, ppo_update
from shoal.train.speed.traced_loss import LossTracer
from tests.train.rollouts import rollout_tensors

KWARGS = dict(clip_coef=0.2, dual_clip=None, clip_vloss=True, vf_clip_coef=0.2, vf_coef=0.5, ent_coef=0.01,
              norm_adv=True)
OBS = gym.spaces.Box(-1.0, 1.0, (6,))


def _minibatch(gen: torch.Generator, n: int = 32, masks: bool = False, ids: bool = False,
               critic: bool = False) -> tuple:
    obs = torch.rand(n, 6, generator=gen) * 2 - 1
    actions = torch.randint(0, 3, (n,), generator=gen)
    action_masks = None
    if masks:
        action_masks = torch.rand(n, 3, generator=gen) > 0.3
        action_masks[torch.arange(n), actions] = True  # the taken action was legal
    agent_ids = torch.randint(0, 4, (n,), generator=gen) if ids else None
    critic_obs = torch.randn(n, 5, generator=gen) if critic else None
    columns = torch.randn(n, 4, generator=gen)
    columns[:, 0] = -torch.rand(n, generator=gen)  # old log-probs
    return obs, actions, action_masks, agent_ids, critic_obs, columns


def _grads(policy: nn.Module) -> list[Tensor]:
    return [p.grad.clone() for p in policy.parameters()]


@pytest.mark.parametrize("masks, ids, critic", [(False, False, False), (True, True, True)])
def test_traced_loss_and_gradients_equal_eager_on_every_minibatch(masks: bool, ids: bool, critic: bool) -> None:
    torch.manual_seed(0)
    policy = Policy(compile_layout(OBS), ActionLayout(gym.spaces.Discrete(3)), hidden_size=16,
                    num_agent_ids=4 if ids else 0, critic_input_size=5 if critic else None)
    tracer = LossTracer()
    gen = torch.Generator().manual_seed(1)
    for _ in range(6):
        batch = _minibatch(gen, masks=masks, ids=ids, critic=critic)
        policy.zero_grad(set_to_none=True)
        eager = minibatch_loss(policy, *batch[:5], *batch[5].unbind(1), KWARGS)
        eager.loss.backward()
        expected = _grads(policy)
        policy.zero_grad(set_to_none=True)
        got = tracer.loss(policy, *batch, KWARGS)
        got.loss.backward()
        for name in ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "old_approx_kl", "clipfrac", "ratio"):
            assert torch.equal(getattr(got, name), getattr(eager, name)), name
        for a, b in zip(_grads(policy), expected, strict=True):
            assert torch.equal(a, b)
    assert tracer.num_traces == 1  # the trace is in use after two checks


def test_ppo_update_with_the_tracer_is_bit_identical() -> None:
    torch.manual_seed(0)
    policy = Policy(compile_layout(OBS), ActionLayout(gym.spaces.Discrete(3)), hidden_size=16)
    twin = copy.deepcopy(policy)
    cfg = TrainConfig(env="bandit", minibatch_size=64, update_epochs=3)
    gen = torch.Generator().manual_seed(2)
    s, h = 4, 32
    data = rollout_tensors(**{
        "obs": torch.rand(s, h, 6, generator=gen), "actions": torch.randint(0, 3, (s, h), generator=gen),
        "log_probs": -torch.rand(s, h, generator=gen), "values": torch.randn(s, h, generator=gen),
        "rewards": torch.randn(s, h, generator=gen), "next_values": torch.randn(s, h, generator=gen),
        "dones": torch.rand(s, h, generator=gen) < 0.1, "valid": torch.ones(s, h, dtype=torch.bool),
        "action_masks": None, "states": None,
    })
    results = []
    tracer = LossTracer()
    for model, used in ((policy, {"loss_fn": tracer}), (twin, {})):
        optimizer = make_optimizer(model, TrainConfig(learning_rate=1e-3))
        generator = torch.Generator().manual_seed(3)
        stats = [ppo_update(model, optimizer, data, cfg, generator, **used) for _ in range(3)]
        results.append((stats, [p.detach().clone() for p in model.parameters()]))
    assert tracer.num_traces >= 1  # the traced update did run through a trace
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1], results[1][1], strict=True):
        assert torch.equal(a, b)


class _Branchy(nn.Module):
    """A policy whose pass depends on tensor values: a trace records one branch only."""

    def __init__(self) -> None:
        super().__init__()
        self.net = Policy(compile_layout(OBS), ActionLayout(gym.spaces.Discrete(3)), hidden_size=8)

    def forward(self, obs: Tensor, **kwargs: object) -> object:
        return self.net(obs * 2.0 if bool(obs[0, 0] > 0) else obs, **kwargs)


def test_value_dependent_branches_are_caught_and_run_eagerly() -> None:
    policy = _Branchy()
    tracer = LossTracer()
    gen = torch.Generator().manual_seed(4)
    first = _minibatch(gen)
    first[0][0, 0] = 0.5  # traced with the doubling branch
    tracer.loss(policy, *first, KWARGS)
    second = _minibatch(gen)
    second[0][0, 0] = -0.5  # the second check takes the other branch
    out = tracer.loss(policy, *second, KWARGS)
    assert tracer.status() == {"verified": 0, "eager": 1, "pending": 0, "built": 1}
    assert torch.equal(out.loss, minibatch_loss(policy, *second[:5], *second[5].unbind(1), KWARGS).loss)


def test_untraceable_policies_and_extra_signatures_run_eagerly() -> None:
    class Untraceable(_Branchy):
        def forward(self, obs: Tensor, **kwargs: object) -> object:
            if torch.jit.is_tracing():
                raise RuntimeError("this policy cannot be traced")
            return self.net(obs, **kwargs)

    gen = torch.Generator().manual_seed(5)
    tracer = LossTracer(max_traces=1)
    policy = Policy(compile_layout(OBS), ActionLayout(gym.spaces.Discrete(3)), hidden_size=8)
    for n in (16, 16, 24):  # the second signature is over the limit
        batch = _minibatch(gen, n=n)
        out = tracer.loss(policy, *batch, KWARGS)
        assert torch.equal(out.loss, minibatch_loss(policy, *batch[:5], *batch[5].unbind(1), KWARGS).loss)
    assert tracer.status() == {"verified": 1, "eager": 0, "pending": 0, "built": 1}  # 24 rows: eager, untraced
    odd, tracer = Untraceable(), LossTracer()
    batch = _minibatch(gen)
    out = tracer.loss(odd, *batch, KWARGS)
    assert torch.equal(out.loss, minibatch_loss(odd, *batch[:5], *batch[5].unbind(1), KWARGS).loss)
    assert tracer.status() == {"verified": 0, "eager": 1, "pending": 0, "built": 1}


def test_disabled_tracer_never_traces() -> None:
    tracer = LossTracer(enabled=False)
    policy = Policy(compile_layout(OBS), ActionLayout(gym.spaces.Discrete(3)), hidden_size=8)
    for _ in range(3):
        tracer.loss(policy, *_minibatch(torch.Generator().manual_seed(6)), KWARGS)
    assert tracer.status() == {"verified": 0, "eager": 0, "pending": 0, "built": 0}


class _Normalized(nn.Module):
    """A policy with a batch norm (a buffer updated by every training pass) and dropout (random, train only)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(6)
        self.drop = nn.Dropout(0.5)
        self.net = Policy(compile_layout(OBS), ActionLayout(gym.spaces.Discrete(3)), hidden_size=8)

    def forward(self, obs: Tensor, **kwargs: object) -> object:
        return self.net(self.drop(self.norm(obs)), **kwargs)


def test_checks_leave_buffers_and_random_state_alone_and_modes_are_part_of_the_signature() -> None:
    torch.manual_seed(0)
    policy, twin = _Normalized(), None
    twin = copy.deepcopy(policy)
    tracer = LossTracer()
    gen = torch.Generator().manual_seed(7)
    batches = [_minibatch(gen) for _ in range(4)]
    for mode in ("train", "eval", "train"):
        policy.train(mode == "train")
        twin.train(mode == "train")
        for batch in batches:
            torch.manual_seed(11)
            got = tracer.loss(policy, *batch, KWARGS)
            torch.manual_seed(11)
            expected = minibatch_loss(twin, *batch[:5], *batch[5].unbind(1), KWARGS)
            assert torch.equal(got.loss, expected.loss)
            # the statistics are detached as the eager loss has them, traced or not
            assert not got.approx_kl.requires_grad and not got.clipfrac.requires_grad
            for a, b in zip(policy.buffers(), twin.buffers(), strict=True):
                assert torch.equal(a, b)  # the checks did not move the batch-norm statistics
    status = tracer.status()
    assert status["verified"] + status["eager"] + status["pending"] == 2  # one signature per mode


def test_replaced_parameters_get_a_new_trace() -> None:
    torch.manual_seed(0)
    policy = Policy(compile_layout(OBS), ActionLayout(gym.spaces.Discrete(3)), hidden_size=8)
    tracer = LossTracer()
    gen = torch.Generator().manual_seed(8)
    batches = [_minibatch(gen) for _ in range(3)]
    for batch in batches:
        tracer.loss(policy, *batch, KWARGS)
    head = policy.value_head
    head.weight = nn.Parameter(head.weight.detach() * 3.0)  # a new tensor, not an in-place update
    for batch in batches:
        got = tracer.loss(policy, *batch, KWARGS)
        assert torch.equal(got.loss, minibatch_loss(policy, *batch[:5], *batch[5].unbind(1), KWARGS).loss)


@pytest.mark.parametrize("bad", [-1, 2.5, True])
def test_max_traces_must_be_a_count(bad: object) -> None:
    with pytest.raises(APIUsageError, match=r"max_traces.*non-negative int"):
        LossTracer(max_traces=bad)  # type: ignore[arg-type]
