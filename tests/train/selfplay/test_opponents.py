"""Policy players of matches and leagues: a sequence policy is refused by name."""

from __future__ import annotations

import pytest
from pettingzoo.classic import tictactoe_v3

from shoal import vector
from shoal.errors import APIUsageError
from shoal.policies.decision_transformer import DecisionTransformer
from shoal.train.selfplay.opponents import PolicyPlayer


def test_a_decision_transformer_is_not_a_match_player() -> None:
    with vector.make(tictactoe_v3.env, 1) as vec:
        policy = DecisionTransformer.from_env(vec, context_length=2, embed_dim=8, num_layers=1, hidden_size=8,
                                              target_return=1.0)
    with pytest.raises(APIUsageError, match=r"'dt' is a DecisionTransformer.*shoal eval RUN --target-return"):
        PolicyPlayer("dt", policy)
