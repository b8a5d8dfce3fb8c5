"""The trainer on asynchronous batches and on worker processes (rollouts overlap the learner there)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.train import TrainConfig, train


def test_partial_env_batches_on_the_serial_backend() -> None:
    # recv() returns half of the envs at a time: rows arrive in alternating groups
    result = train(
        TrainConfig(
            env="bandit",
            num_envs=4,
            num_workers=2,
            env_batch_size=2,
            horizon=8,
            minibatch_size=32,
            update_epochs=4,
            learning_rate=1e-2,
            total_steps=3_000,
            seed=1,
            eval_episodes=40,
            log_interval=60,
        )
    )
    assert result.evaluation is not None and result.evaluation["mean_return"] >= 0.95


@pytest.mark.timeout(120)
def test_multiprocessing_backend_overlaps_and_resumes_inexactly(tmp_path: Path) -> None:
    cfg = TrainConfig(
        env="squad",
        backend="multiprocessing",
        num_envs=4,
        num_workers=2,
        env_batch_size=2,
        horizon=8,
        minibatch_size=32,
        update_epochs=2,
        total_steps=400,
        seed=2,
        run_dir=str(tmp_path / "run"),
        checkpoint_interval=1,
        tensorboard=False,
        log_interval=60,
    )
    first = train(cfg)
    assert first.global_step >= 400 and first.episodes > 0
    resumed = train(cfg.replace(total_steps=800, resume=True))
    assert resumed.resumed_from is not None and resumed.global_step >= 800
    assert not resumed.exact_resume  # envs in worker processes restart from a fresh reset


def test_reward_scaling_and_clipping_change_only_what_the_learner_sees() -> None:
    from shoal.train import Trainer

    trainer = Trainer(
        TrainConfig(
            env="bandit",
            num_envs=4,
            horizon=8,
            minibatch_size=32,
            total_steps=64,
            seed=0,
            reward_scale=3.0,
            reward_clip=2.0,
        )
    )
    try:
        trainer.collect()
        rewards = trainer.buffer.data().rewards
        assert set(rewards[rewards != 0].tolist()) == {2.0}  # 1 * 3 clipped to 2
        assert set(trainer.episode_returns) <= {0.0, 1.0}  # statistics report raw returns
    finally:
        trainer.close()


def test_shoal_train_is_callable_after_importing_the_package() -> None:
    import shoal
    import shoal.train

    result = shoal.train(TrainConfig(env="bandit", num_envs=2, horizon=8, minibatch_size=16, total_steps=16))
    assert result.global_step >= 16 and callable(shoal.train)
