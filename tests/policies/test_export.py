"""ONNX export of the actor (same logits as torch) and plain state-dict checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from shoal.emulation import compile_layout
from shoal.errors import CheckpointError
from shoal.policies import Policy, export_onnx, load_policy, load_state_dict, run_onnx, save_policy
from tests.policies.helpers import action_layout, block_masks, random_masks, sample_rows
from tests.zoo import SPACE_ZOO

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


def _assert_close(onnx_out: np.ndarray, torch_out: torch.Tensor) -> None:
    np.testing.assert_allclose(onnx_out, torch_out.detach().numpy(), rtol=1e-5, atol=1e-5)


def test_byte_rows_with_masks_match_torch(tmp_path: Path) -> None:
    """Mixed dtypes (int8..int64, float16/32/64, bool in one byte row) decoded inside the graph; the float leaves
    normalized by running statistics (``obs_norm``), which the graph holds."""
    torch.manual_seed(0)
    policy = Policy(compile_layout(SPACE_ZOO["mixed_dtypes"]), action_layout("multi_discrete"), obs_norm=True)
    policy.update_observation_stats(policy.observation_moments(sample_rows(SPACE_ZOO["mixed_dtypes"], 50, seed=4)))
    assert policy.encoder.normalizes and int(policy.encoder.leaf_encoders[0].obs_stats.count) == 50
    path = export_onnx(policy, tmp_path / "actor.onnx", with_action_masks=True)
    obs = sample_rows(SPACE_ZOO["mixed_dtypes"], 7, seed=1)  # a batch size other than the traced one
    masks = block_masks(7, [3, 5, 2])
    (logits,) = run_onnx(path, {"obs": obs, "action_masks": masks})
    with torch.no_grad():
        expected, _ = policy.actor(obs, action_masks=masks)
    _assert_close(logits, expected)
    assert (logits[~masks.numpy()] == np.finfo(np.float32).min).all()


def test_recurrent_nested_policy_with_agent_ids_matches_torch(tmp_path: Path) -> None:
    """Embeddings, a small CNN, the LSTM state in and out, an agent-id input and a hybrid action head."""
    torch.manual_seed(1)
    policy = Policy(compile_layout(SPACE_ZOO["nested"]), action_layout("hybrid"), recurrent=True,
                    num_agent_ids=3, hidden_size=64, lstm_size=32)
    path = export_onnx(policy, tmp_path / "actor.onnx")
    obs = sample_rows(SPACE_ZOO["nested"], 5, seed=2)
    ids = torch.tensor([0, 1, 2, 0, 1])
    h, c = torch.randn(1, 5, 32), torch.randn(1, 5, 32)
    logits, h_out, c_out = run_onnx(path, {"obs": obs, "agent_ids": ids, "h": h, "c": c})
    with torch.no_grad():
        expected, (h_ref, c_ref) = policy.actor(obs, (h, c), agent_ids=ids)
    _assert_close(logits, expected)
    _assert_close(h_out, h_ref)
    _assert_close(c_out, c_ref)
    assert logits.shape == (5, 4 + 2)  # discrete logits, then the Gaussian mean


def test_float_rows_and_the_policy_is_left_unchanged(tmp_path: Path) -> None:
    torch.manual_seed(2)
    policy = Policy(compile_layout(SPACE_ZOO["box_float32"]), action_layout("discrete"))
    policy.train()
    path = export_onnx(policy, tmp_path / "actor.onnx", with_action_masks=True)
    assert policy.training and not policy.encoder.portable
    obs = sample_rows(SPACE_ZOO["box_float32"], 3)
    masks = random_masks(3, 5)
    (logits,) = run_onnx(path, {"obs": obs, "action_masks": masks})
    _assert_close(logits, policy.actor(obs, action_masks=masks)[0])


def test_a_plain_actor_with_no_extra_inputs_exports(tmp_path: Path) -> None:
    # only an observation input (no masks, ids or LSTM state): the export used to fail on its dynamic shapes
    torch.manual_seed(3)
    policy = Policy(compile_layout(SPACE_ZOO["box_float32"]), action_layout("discrete"), hidden_size=8)
    path = export_onnx(policy, tmp_path / "actor.onnx")
    obs = sample_rows(SPACE_ZOO["box_float32"], 5)
    (logits,) = run_onnx(path, {"obs": obs})
    with torch.no_grad():
        _assert_close(logits, policy.actor(obs)[0])


def test_state_dict_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(3)
    layout = compile_layout(SPACE_ZOO["nethack"])
    policy = Policy(layout, action_layout("multi_discrete"), hidden_size=32, recurrent=True, lstm_size=16)
    path = save_policy(policy, tmp_path / "policy.pt")
    assert torch.load(path, weights_only=True)["config"]["lstm_size"] == 16  # plain data only

    restored = load_policy(path, obs_layout=layout, action_layout=action_layout("multi_discrete"))
    obs = sample_rows(SPACE_ZOO["nethack"], 4)
    with torch.no_grad():
        torch.testing.assert_close(restored.actor(obs)[0], policy.actor(obs)[0])

    other = Policy(layout, action_layout("multi_discrete"), hidden_size=32, recurrent=True, lstm_size=16)
    load_state_dict(other, policy.state_dict())  # a bare state dict works too
    with pytest.raises(CheckpointError, match="obs_layout"):
        load_state_dict(Policy(compile_layout(SPACE_ZOO["nested"]), action_layout("multi_discrete")), path)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_state_dict(Policy(layout, action_layout("multi_discrete"), hidden_size=64), path)
    with pytest.raises(CheckpointError, match="no policy checkpoint"):
        load_policy(tmp_path / "missing.pt", obs_layout=layout, action_layout=action_layout("multi_discrete"))


def test_code_grids_and_small_range_images_match_torch(tmp_path: Path) -> None:
    """Integer Box codes (embedded per element) and an image scaled by its declared high, in one graph."""
    from gymnasium import spaces

    space = spaces.Dict({
        "grid": spaces.Box(0, 255, (7, 7, 3), np.uint8),  # MiniGrid-like ids: embedded
        "kinds": spaces.Box(0, 10, (4,), np.int64),  # codes 0..10: embedded
        "view": spaces.Box(0, 10, (8, 8, 2), np.uint8),  # a CNN, inputs scaled by 1/10
    })
    torch.manual_seed(3)
    policy = Policy(compile_layout(space), action_layout("discrete"), hidden_size=32)
    assert set(policy.encoder.kinds.values()) == {"embedding", "image"}
    path = export_onnx(policy, tmp_path / "actor.onnx")
    obs = sample_rows(space, 6, seed=4)
    (logits,) = run_onnx(path, {"obs": obs})
    with torch.no_grad():
        expected, _ = policy.actor(obs)
    _assert_close(logits, expected)

