"""train() with SuperSuit wrappers: applied to the env config.env names or to a given env_fn, recorded in the
run, and rebuilt by evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.train import TrainConfig, evaluate_checkpoint, make_trainer, train
from shoal.train.runs.resolve import resolve_env

PISTONBALL = "pettingzoo.butterfly.pistonball_v6"
SPEC = "color_reduction_v0(mode='B'),resize_v1(32,32),frame_stack_v1(2)"
FAST = {"num_envs": 1, "horizon": 8, "minibatch_size": 16, "update_epochs": 1, "tensorboard": False}


@pytest.mark.filterwarnings("ignore:The old environment creation API:DeprecationWarning")
def test_pistonball_trains_and_evaluates_through_wrappers(tmp_path: Path) -> None:
    config = TrainConfig(env=PISTONBALL, env_kwargs={"n_pistons": 3, "continuous": False, "max_cycles": 12},
                         wrappers=SPEC, total_steps=48, run_dir=str(tmp_path / "run"), **FAST)
    result = train(config)
    assert result.policy.obs_layout.leaves[0].shape == (32, 32, 2)  # every agent's wrapped frames
    assert TrainConfig.load(tmp_path / "run" / "config.json").wrappers == SPEC
    evaluation = evaluate_checkpoint(tmp_path / "run", episodes=3)
    assert evaluation["episodes"] == 3 and evaluation["mean_length"] <= 12


def test_a_given_env_fn_is_wrapped_too() -> None:
    trainer = make_trainer(TrainConfig(wrappers="dtype_v0('float64')", total_steps=16, **{**FAST, "minibatch_size": 8}),
                           env_fn=resolve_env("CartPole-v1"))
    try:
        assert str(trainer.vecenv.obs_layout.flat_dtype) == "float64"
    finally:
        trainer.vecenv.close()


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_online_algorithms_refuse_a_decision_transformer(algo: str) -> None:
    from shoal import vector
    from shoal.errors import APIUsageError
    from shoal.policies.decision_transformer import DecisionTransformer

    with vector.make(resolve_env("CartPole-v1"), 1) as vec:
        policy = DecisionTransformer.from_env(vec, context_length=2, embed_dim=8, num_layers=1, hidden_size=8)
    with pytest.raises(APIUsageError, match=f"algo='{algo}' trains policies that act from one step"):
        train(TrainConfig(algo=algo, total_steps=16, **{**FAST, "minibatch_size": 8}), policy=policy)
