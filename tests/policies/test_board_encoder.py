"""The board encoder of the default policy: which leaves are boards, what it computes, and old policies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces

from shoal.emulation.layout import Leaf, compile_layout
from shoal.errors import SpaceError
from shoal.policies import Policy
from shoal.policies.encoders import BoardEncoder, encoder_kind
from shoal.policies.export import load_policy, save_policy

CONNECT_FOUR = spaces.Box(0, 1, (6, 7, 2), np.int8)


def _leaf(space: spaces.Space) -> Leaf:
    return compile_layout(space).leaves[0]


def test_board_planes_get_the_board_encoder_and_other_leaves_do_not() -> None:
    assert encoder_kind(_leaf(CONNECT_FOUR)) == "board"
    assert encoder_kind(_leaf(spaces.Box(0, 1, (8, 8, 111), bool))) == "board"  # chess planes
    # integer leaves that are not boards are codes, embedded per element
    assert encoder_kind(_leaf(spaces.Box(0, 1, (3, 3, 2), np.int8))) == "embedding"  # tic-tac-toe: too small
    assert encoder_kind(_leaf(spaces.Box(0, 255, (84, 84, 3), np.uint8))) == "image"
    assert encoder_kind(_leaf(spaces.Box(0, 5, (6, 7, 2), np.int8))) == "embedding"  # counts, not 0/1 planes
    assert encoder_kind(_leaf(spaces.Box(0.0, 1.0, (6, 7, 2), np.float32))) == "vector"
    assert encoder_kind(_leaf(CONNECT_FOUR), boards=False) == "embedding"
    with pytest.raises(SpaceError, match="is not a board"):
        BoardEncoder(_leaf(spaces.Box(0, 1, (3, 3, 2), np.int8)), 32)


def test_board_encoder_sees_local_patterns_at_every_cell() -> None:
    torch.manual_seed(0)
    encoder = BoardEncoder(_leaf(CONNECT_FOUR), 64)
    board = torch.zeros(2, 6, 7, 2, dtype=torch.int8)
    board[0, 5, 0:4, 0] = 1  # four in a row on the bottom left
    board[1, 5, 3:7, 0] = 1  # the same four shifted right: a different position, different features
    out = encoder(board)
    assert out.shape == (2, 64) and out.dtype == torch.float32
    assert not torch.allclose(out[0], out[1])
    # the convolutions keep the board's size: the flat features are channels x 6 x 7
    assert encoder.linear.in_features == 32 * 6 * 7


def test_default_policy_on_a_board_round_trips_and_old_policies_load_as_vectors(tmp_path: Path) -> None:
    torch.manual_seed(1)
    policy = Policy(CONNECT_FOUR, spaces.Discrete(7), hidden_size=32)
    assert policy.encoder.kinds == {policy.obs_layout.leaves[0].name: "board"}
    assert policy.config["board_encoder"] is True
    obs = torch.randint(0, 2, (5, 84), dtype=torch.int8)
    again = load_policy(save_policy(policy, tmp_path / "board.pt"), obs_layout=policy.obs_layout,
                        action_layout=policy.action_layout)
    with torch.no_grad():
        assert torch.equal(policy(obs, deterministic=True).action, again(obs, deterministic=True).action)
    # a config saved before the board encoder existed has no 'board_encoder': it rebuilds the flat MLP it had
    old = Policy(CONNECT_FOUR, spaces.Discrete(7), hidden_size=32, board_encoder=False)
    data = torch.load(save_policy(old, tmp_path / "old.pt"), weights_only=True)
    del data["config"]["board_encoder"]
    rebuilt = load_policy(data, obs_layout=old.obs_layout, action_layout=old.action_layout)
    assert rebuilt.encoder.kinds == old.encoder.kinds and "board" not in rebuilt.encoder.kinds.values()
