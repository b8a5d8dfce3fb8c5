"""DecisionTransformer: shapes, causality, padding, legal actions, Box bounds, refusals and save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from shoal.emulation import ActionLayout, compile_layout
from shoal.errors import APIUsageError, SpaceError
from shoal.policies import export_onnx, load_policy, save_policy
from shoal.policies.decision_transformer import DecisionTransformer
from shoal.policies.registry import rebuild_policy

from .helpers import ACTION_SPACES, random_masks, sample_rows

#: nested, mixed-dtype observations: a grid of codes, a Discrete, a float vector
MIXED = spaces.Dict({
    "grid": spaces.Box(0, 5, (4, 4), np.int8),
    "mode": spaces.Discrete(3),
    "pos": spaces.Box(-1.0, 1.0, (2,), np.float32),
})


def model(obs_space: spaces.Space = MIXED, kind: str = "discrete", **kwargs: object) -> DecisionTransformer:
    torch.manual_seed(0)
    options = dict(context_length=4, embed_dim=16, num_layers=2, num_heads=2, dropout=0.0, hidden_size=16,
                   return_scale=10.0, target_return=5.0)
    return DecisionTransformer(compile_layout(obs_space), ActionLayout(ACTION_SPACES[kind]), **(options | kwargs))


def window(m: DecisionTransformer, batch: int = 3, steps: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    obs = sample_rows(m.obs_layout, batch * steps, seed).reshape(batch, steps, -1)
    if m.kind == "discrete":
        actions = torch.randint(m.num_actions, (batch, steps), generator=gen)
    else:
        actions = torch.rand(batch, steps, m.num_actions, generator=gen) * 4 - 2
    return {"obs": obs, "actions": actions, "returns_to_go": torch.rand(batch, steps, generator=gen) * 10,
            "timesteps": torch.arange(steps).repeat(batch, 1) + torch.randint(100, (batch, 1), generator=gen)}


def test_predicts_one_action_per_step_of_mixed_observations() -> None:
    m = model().eval()
    out = m(**window(m))
    assert out.shape == (3, 4, 5) and out.dtype == torch.float32 and torch.isfinite(out).all()
    shorter = {k: v[:, :2] for k, v in window(m).items()}  # windows shorter than the context
    assert m(**shorter).shape == (3, 2, 5)


@pytest.mark.parametrize("changed", ["obs", "actions", "returns_to_go", "timesteps"])
def test_a_later_token_does_not_change_earlier_predictions(changed: str) -> None:
    m = model().eval()
    inputs = window(m)
    before = m(**inputs)
    other = window(m, seed=1)[changed]
    inputs[changed] = torch.cat([inputs[changed][:, :2], other[:, 2:]], 1)  # steps 2 and 3 changed
    after = m(**inputs)
    # step 2's observation, return and timestep feed the prediction of step 2; its action only those after it
    same = 3 if changed == "actions" else 2
    torch.testing.assert_close(after[:, :same], before[:, :same], rtol=0, atol=1e-6)
    assert not torch.allclose(after[:, same:], before[:, same:])


def test_padded_steps_change_nothing_and_match_the_shorter_window() -> None:
    m = model().eval()
    inputs = window(m)
    valid = torch.tensor([[False, False, True, True]]).repeat(3, 1)
    padded = m(**inputs, valid=valid)
    junk = window(m, seed=7)
    for name in inputs:
        junk[name] = torch.cat([junk[name][:, :2], inputs[name][:, 2:]], 1)
    torch.testing.assert_close(m(**junk, valid=valid)[:, 2:], padded[:, 2:], rtol=0, atol=1e-6)
    # the learned timestep embedding, not the position, places a step: the real steps alone predict the same
    alone = m(**{k: v[:, 2:] for k, v in inputs.items()})
    torch.testing.assert_close(padded[:, 2:], alone, rtol=0, atol=1e-5)
    assert torch.isfinite(padded).all()


def test_discrete_choices_are_legal_and_box_actions_stay_in_bounds() -> None:
    m = model().eval()
    logits = m(**window(m, batch=64))[:, -1]
    masks = random_masks(64, 5, p_legal=0.3)
    for deterministic in (True, False):
        action, log_prob = m.choose(logits, masks, deterministic)
        assert masks[torch.arange(64), action].all() and (log_prob <= 0).all()
    box = model(kind="continuous").eval()
    action, _ = box.choose(box(**window(box, batch=64))[:, -1])
    assert action.shape == (64, 3) and (action.abs() <= 2.0).all()
    torch.testing.assert_close(box.to_env_units(box.to_unit_range(action)), action)


@pytest.mark.parametrize("kind", ["multi_discrete", "hybrid"])
def test_multi_discrete_and_hybrid_actions_are_refused(kind: str) -> None:
    with pytest.raises(APIUsageError, match=f"Discrete or Box actions; this env's actions are {kind}"):
        model(kind=kind)


def test_bad_inputs_name_what_is_wrong() -> None:
    m = model()
    inputs = window(m)
    with pytest.raises(SpaceError, match="observation rows"):
        m(**(inputs | {"obs": inputs["obs"].float()}))
    with pytest.raises(APIUsageError, match="returns_to_go has shape"):
        m(**(inputs | {"returns_to_go": inputs["returns_to_go"][:, :2]}))
    with pytest.raises(APIUsageError, match="longer than context_length=4"):
        m(**{k: torch.cat([v, v], 1) for k, v in inputs.items()})
    with pytest.raises(APIUsageError, match="infinite or empty bounds"):
        DecisionTransformer(compile_layout(MIXED), ActionLayout(spaces.Box(-np.inf, np.inf, (2,), np.float32)))
    with pytest.raises(APIUsageError, match="none was given: pass --target-return"):
        model(target_return=None).initial_context(2)
    with pytest.raises(APIUsageError, match="is not exported: save it with save_policy"):
        export_onnx(m, "never-written.onnx")


def test_save_and_load_rebuild_the_same_model(tmp_path) -> None:
    for kind in ("discrete", "continuous"):
        m = model(kind=kind).eval()
        path = save_policy(m, tmp_path / f"{kind}.pt")
        loaded = load_policy(path, obs_layout=m.obs_layout, action_layout=m.action_layout).eval()
        assert type(loaded) is DecisionTransformer and loaded.config == m.config
        assert loaded.target_return == 5.0 and loaded.return_scale == 10.0
        inputs = window(m)
        torch.testing.assert_close(loaded(**inputs), m(**inputs), rtol=0, atol=0)

        class Env:
            obs_layout, action_layout = m.obs_layout, m.action_layout

        rebuilt = rebuild_policy("shoal.policies.decision_transformer.DecisionTransformer", m.config, Env(), "test")
        assert type(rebuilt) is DecisionTransformer and rebuilt.config == m.config
