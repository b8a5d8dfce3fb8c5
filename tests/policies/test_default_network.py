"""The default network: inputs at their own scale, a full-width first layer, a critic that cannot move the actor.

Each of these kept PPO from learning Acrobot-v1 with CleanRL's hyperparameters (it stayed at -500).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gymnasium import spaces

from shoal.emulation.layout import compile_layout
from shoal.errors import CheckpointError
from shoal.policies import Policy
from shoal.policies.encoders import leaf_scaling, scale_leaf
from shoal.policies.export import load_policy


def test_float_box_bounds_are_not_used_as_its_scale() -> None:
    # Acrobot's velocities: bounds +-4pi / +-9pi are clamps; the data has a std of 1.3 / 2.2
    leaf = compile_layout(spaces.Box(np.float32([-4 * math.pi, -9 * math.pi]),
                                     np.float32([4 * math.pi, 9 * math.pi]))).leaves[0]
    x = torch.tensor([[1.5, -2.0]])
    assert leaf_scaling(leaf)[0] == "none"
    assert torch.equal(scale_leaf(leaf, x), x)


def test_integer_box_is_still_rescaled_into_unit_range() -> None:
    leaf = compile_layout(spaces.Box(0, 10, (3,), np.int64)).leaves[0]
    assert leaf_scaling(leaf)[0] == "affine"


def test_a_small_vector_leaf_gets_a_full_width_first_layer() -> None:
    policy = Policy(spaces.Box(-1, 1, (6,), np.float32), spaces.Discrete(3), hidden_size=64)
    assert policy.encoder.out_features == 64


def test_fitting_the_value_does_not_move_the_action_distribution() -> None:
    # with one shared trunk, fitting returns of -100 grew the shared features and with them the logits
    torch.manual_seed(0)
    policy = Policy(spaces.Box(-1, 1, (6,), np.float32), spaces.Discrete(3), hidden_size=64)
    obs = torch.rand(256, 6) * 2 - 1
    before = policy(obs, action=torch.zeros(256, dtype=torch.long)).logits.detach()
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
    for _ in range(50):
        optimizer.zero_grad()
        ((policy.value(obs) + 100.0) ** 2).mean().backward()
        optimizer.step()
    after = policy(obs, action=torch.zeros(256, dtype=torch.long)).logits.detach()
    assert torch.equal(before, after)
    shared = Policy(spaces.Box(-1, 1, (6,), np.float32), spaces.Discrete(3), hidden_size=64, separate_critic=False)
    assert not hasattr(shared, "critic_trunk")


def test_image_and_board_policies_share_their_cnn_and_vector_policies_do_not() -> None:
    image = Policy(spaces.Box(0, 255, (36, 36, 3), np.uint8), spaces.Discrete(3), hidden_size=32)
    board = Policy(spaces.Box(0, 1, (6, 7, 2), np.int8), spaces.Discrete(7), hidden_size=32)  # connect four's
    flat_board = Policy(spaces.Box(0, 1, (6, 7, 2), np.int8), spaces.Discrete(7), hidden_size=32, board_encoder=False)
    vector = Policy(spaces.Box(-1, 1, (6,), np.float32), spaces.Discrete(3), hidden_size=32)
    for shared in (image, board):
        assert shared.config["separate_critic"] is False and not hasattr(shared, "critic_encoder")
    assert flat_board.config["separate_critic"] is True  # boards read as vectors, as policies saved before
    assert vector.config["separate_critic"] is True
    obs = torch.rand(5, 6) * 2 - 1
    torch.testing.assert_close(vector.value_head(vector.encode_critic(obs)).squeeze(-1), vector.value(obs))


def test_a_policy_saved_before_the_network_changed_is_refused_with_the_reason() -> None:
    policy = Policy(spaces.Box(-1, 1, (6,), np.float32), spaces.Discrete(3), hidden_size=16)
    # before the separate critic (no separate_critic, no encoding), and before integer codes were embedded
    for dropped in (("separate_critic", "encoding"), ("encoding",)):
        old = {"config": {k: v for k, v in policy.config.items() if k not in dropped},
               "state_dict": policy.state_dict()}
        with pytest.raises(CheckpointError, match=r"saved by an older shoal.*retrain"):
            load_policy(old, obs_layout=policy.obs_layout, action_layout=policy.action_layout)
