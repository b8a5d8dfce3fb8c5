"""SAC on the shared training loop: it learns (Box and Discrete actions), resumes exactly, trains agent slots of
PettingZoo games (with decentralized or centralized critics), and refuses what it cannot train with a message that
says what to do."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from mpe2 import simple_spread_v3

from shoal.cli import main
from shoal.errors import APIUsageError
from shoal.policies.sac import SACPolicy
from shoal.train import TrainConfig, make_trainer, train
from shoal.train.core.centralized import agent_summary, critic_input_size, summary_size
from tests.faults.envs import InterruptAt

FAST = dict(tensorboard=False, log_interval=60.0, trace_actor=False)


def test_sac_learns_pendulum_far_beyond_a_random_policy() -> None:
    # a random policy scores about -1200 on Pendulum-v1; SAC swings the pendulum up within a few thousand steps
    result = train(TrainConfig(env="Pendulum-v1", algo="sac", total_steps=3000, learning_starts=500, hidden_size=64,
                               seed=1, eval_episodes=6, **FAST))
    assert isinstance(result.policy, SACPolicy)
    assert result.evaluation["mean_return"] > -600, result.evaluation


def test_discrete_sac_learns_a_contextual_bandit() -> None:
    # 4 contexts x 4 arms: chance is 0.25 per episode, the correct arm for every context scores 1
    result = train(TrainConfig(env="bandit", algo="sac", total_steps=1500, learning_starts=200, hidden_size=32,
                               seed=0, eval_episodes=40, **FAST))
    assert result.evaluation["mean_return"] >= 0.9, result.evaluation


def _weights(policy: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in policy.state_dict().items()}


@pytest.mark.parametrize("n_step", [1, 3])
def test_a_resumed_run_continues_exactly_as_an_uninterrupted_one(tmp_path: object, n_step: int) -> None:
    common = dict(env="Pendulum-v1", algo="sac", learning_starts=100, hidden_size=16, horizon=10, num_envs=2,
                  checkpoint_interval=1, seed=3, n_step=n_step, **FAST)
    straight = train(TrainConfig(total_steps=400, **common))
    run_dir = str(tmp_path / "run")  # type: ignore[operator]
    train(TrainConfig(total_steps=200, run_dir=run_dir, **common))
    resumed = train(TrainConfig(total_steps=400, run_dir=run_dir, resume=True, **common))
    assert resumed.exact_resume and resumed.global_step == straight.global_step == 400
    a, b = _weights(straight.policy), _weights(resumed.policy)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"


def test_without_the_replay_in_checkpoints_a_resume_says_it_is_not_exact(tmp_path: object) -> None:
    run_dir = str(tmp_path / "run")  # type: ignore[operator]
    common = dict(env="Pendulum-v1", algo="sac", learning_starts=50, hidden_size=16, horizon=10, num_envs=2,
                  save_replay=False, run_dir=run_dir, **FAST)
    train(TrainConfig(total_steps=100, **common))
    resumed = train(TrainConfig(total_steps=200, resume=True, **common))
    assert not resumed.exact_resume


def test_a_turn_based_game_trains_every_seat_and_only_legal_actions_are_stored() -> None:
    trainer = make_trainer(TrainConfig(env="pettingzoo.classic.tictactoe_v3", algo="sac", total_steps=600,
                                       learning_starts=200, hidden_size=32, num_envs=2, horizon=20, **FAST))
    try:
        result = trainer.train()
        replay = trainer.buffer
        n = replay.size
        assert n > 0 and n == result.global_step - int(replay.pending.sum())
        assert all(replay.action_masks[i, replay.actions[i]] for i in range(n))
        assert set(np.unique(replay.agent_ids[:n])) == {0, 1}
    finally:
        trainer.close()


def test_parameter_shared_sac_on_a_continuous_multi_agent_env() -> None:
    def env_fn() -> object:
        return simple_spread_v3.parallel_env(N=3, max_cycles=25, continuous_actions=True)

    result = train(TrainConfig(algo="sac", total_steps=1500, learning_starts=300, hidden_size=32, num_envs=2,
                               agent_ids=True, **FAST), env_fn=env_fn)
    assert result.policy.num_agent_ids == 3 and result.global_step >= 1500
    assert result.episodes > 0 and np.isfinite(result.episode_return)


class _Hybrid(gym.Env):
    observation_space = spaces.Box(-1, 1, (2,), np.float32)
    action_space = spaces.Tuple((spaces.Discrete(2), spaces.Box(-1, 1, (1,), np.float32)))

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        return np.zeros(2, np.float32), {}

    def step(self, action: object) -> tuple[np.ndarray, float, bool, bool, dict]:
        return np.zeros(2, np.float32), 0.0, True, False, {}


class _Unbounded(_Hybrid):
    action_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)


class _Image(_Hybrid):
    observation_space = spaces.Box(0, 255, (32, 32, 3), np.uint8)
    action_space = spaces.Discrete(2)


@pytest.mark.parametrize(("env_cls", "words"), [(_Hybrid, "--algo ppo"), (_Unbounded, "RescaleAction"),
                                                 (_Image, "image leaf")])
def test_what_sac_cannot_train_is_refused_with_what_to_do(env_cls: type, words: str) -> None:
    with pytest.raises(APIUsageError, match=words):
        make_trainer(TrainConfig(algo="sac", **FAST), env_fn=env_cls)


@pytest.mark.parametrize("flag", ["league", "async_learner", "recurrent"])
def test_sac_refuses_options_it_does_not_support(flag: str) -> None:
    with pytest.raises(APIUsageError, match=f"algo='sac' does not support .*{flag}"):
        TrainConfig(algo="sac", **{flag: True}).validate()


def test_command_line_trains_saves_and_evaluates_sac(tmp_path: object, capsys: pytest.CaptureFixture) -> None:
    run_dir = str(tmp_path / "sac")  # type: ignore[operator]
    assert main(["train", "Pendulum-v1", "--algo", "sac", "--total-steps", "400", "--learning-starts", "100",
                 "--hidden-size", "16", "--replay-size", "5000", "--run-dir", run_dir, "--no-dashboard",
                 "--no-tensorboard"]) == 0
    printed = capsys.readouterr()
    assert "replay buffer: 5,000 transitions of 12-byte observations" in printed.out + printed.err
    trained = json.loads(printed.out.strip().splitlines()[-1])
    assert trained["ok"] and trained["algo"] == "sac" and trained["global_step"] == 400
    saved = json.loads((tmp_path / "sac" / "config.json").read_text())  # type: ignore[operator]
    assert saved["algo"] == "sac" and saved["anneal_lr"] is False and saved["minibatch_size"] == 256
    assert main(["eval", run_dir, "--episodes", "2", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["ok"] and evaluated["episodes"] == 2 and evaluated["mean_return"] < 0


def test_an_interrupt_mid_update_saves_it_whole_and_the_run_resumes_from_it(tmp_path: object) -> None:
    run_dir = str(tmp_path / "run")  # type: ignore[operator]
    common = dict(env="Pendulum-v1", algo="sac", learning_starts=20, hidden_size=8, horizon=10, num_envs=1,
                  run_dir=run_dir, **FAST)
    trainer = make_trainer(TrainConfig(total_steps=100, **common), env_fn=lambda: InterruptAt("Pendulum-v1", 35))
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    # 34 steps were acted: 3 whole updates and a partial one, saved as update 4 with every acted step counted
    assert trainer.update == 4 and trainer.global_step == 35 and trainer.last_checkpoint is not None
    assert trainer.buffer.size == 34  # the interrupted step's decision never completed
    resumed = train(TrainConfig(total_steps=100, resume=True, **common))
    assert resumed.global_step >= 100 and not resumed.exact_resume


def test_a_run_resumed_without_its_replay_refills_before_learning(tmp_path: object) -> None:
    run_dir = str(tmp_path / "run")  # type: ignore[operator]
    common = dict(env="Pendulum-v1", algo="sac", learning_starts=60, hidden_size=8, horizon=10, num_envs=1,
                  save_replay=False, run_dir=run_dir, log_interval=0.0, tensorboard=False, trace_actor=False)
    train(TrainConfig(total_steps=100, **common))
    steps: list[float] = []
    train(TrainConfig(total_steps=200, resume=True, **common),
          callbacks=[lambda record: steps.append(record.scalars.get("losses/gradient_steps", 0.0))])
    # the first updates after the resume refill the buffer (60 transitions, less the one pending) without learning
    assert steps[:5] == [0.0] * 5 and sum(steps) > 0


def _spread() -> object:
    return simple_spread_v3.parallel_env(N=3, max_cycles=25, continuous_actions=True)


@pytest.mark.parametrize(("critic_input", "mode"), [("concat", "concat"), ("state", "state"), ("auto", "state")])
def test_centralized_critics_train_on_simple_spread_and_each_transition_keeps_its_inputs(critic_input: str,
                                                                                         mode: str) -> None:
    trainer = make_trainer(TrainConfig(algo="sac", total_steps=600, learning_starts=150, hidden_size=32, num_envs=2,
                                       horizon=10, agent_ids=True, critic_input=critic_input, replay_size=5000,
                                       **FAST), env_fn=_spread)
    try:
        trainer.train()
        layout, central, buf = trainer.vecenv.obs_layout, trainer.central, trainer.buffer
    finally:
        trainer.close()
    assert trainer.critic_mode == mode and central is not None  # "auto": simple_spread's 54-number state()
    assert trainer.policy.critic_input_size == central.size == critic_input_size(layout, 3, 1, central.state_size)
    assert trainer.last_stats["gradient_steps"] > 0 and np.isfinite(trainer.last_stats["q_loss"])
    assert any("critic inputs (centralized" in line for line in trainer.describe())
    # every step stores the 6 rows (2 envs x 3 agents) in order: transition s * 6 + row
    n = buf.size
    assert n == 600
    critic, next_critic = buf.critic_obs[:n], buf.next_critic_obs[:n]
    f = summary_size(layout)
    own = slice(central.size - f - 4, central.size - 4)  # [global | own features | slot one-hot (3) | type (1)]
    for stored, obs in ((critic, buf.obs[:n]), (next_critic, buf.next_obs[:n])):
        expected = agent_summary(layout, torch.from_numpy(obs)).numpy()
        np.testing.assert_allclose(stored[:, own], expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(critic[:, -4:-1].argmax(1), buf.agent_ids[:n])
    joint = critic[:, : central.size - f - 4].reshape(-1, 2, 3, central.size - f - 4)
    assert np.array_equal(joint[:, :, 0], joint[:, :, 1]) and np.array_equal(joint[:, :, 0], joint[:, :, 2])
    # within an episode (25 steps, then truncated) a transition's next input is the next decision's input
    steps = np.arange(n // 6 - 1)
    going_on = steps[(steps + 1) % 25 != 0]
    later = (going_on[:, None] * 6 + np.arange(6)).reshape(-1)
    np.testing.assert_array_equal(next_critic[later], critic[later + 6])


@pytest.mark.parametrize(("env", "critic_input"), [("squad", "concat"), ("coordination", "state")])
def test_a_resumed_run_with_centralized_critics_continues_exactly(tmp_path: object, env: str,
                                                                   critic_input: str) -> None:
    # built-in PettingZoo envs whose copies can be snapshotted (mpe2's hold a pygame surface): squad's agents die
    # mid-episode (masked slots), coordination's global state is tracked across the checkpoint
    common = dict(env=env, algo="sac", critic_input=critic_input, learning_starts=60, hidden_size=16, horizon=10,
                  num_envs=2, agent_ids=True, checkpoint_interval=1, seed=5, **FAST)
    straight = train(TrainConfig(total_steps=400, **common))
    run_dir = str(tmp_path / "run")  # type: ignore[operator]
    train(TrainConfig(total_steps=200, run_dir=run_dir, **common))
    resumed = train(TrainConfig(total_steps=400, run_dir=run_dir, resume=True, **common))
    assert resumed.exact_resume and resumed.global_step == straight.global_step
    assert resumed.policy.critic_input_size > 0
    a, b = _weights(straight.policy), _weights(resumed.policy)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"


def test_centralized_critics_need_a_pettingzoo_env_and_fit_the_memory_limit() -> None:
    with pytest.raises(APIUsageError, match=r"single-agent env.*drop --critic-input"):
        make_trainer(TrainConfig(env="Pendulum-v1", algo="sac", critic_input="concat", **FAST))
    with pytest.raises(APIUsageError, match=r"critic_memory_limit=0\.0001 GiB; lower --replay-size"):
        make_trainer(TrainConfig(algo="sac", critic_input="concat", replay_size=10_000, critic_memory_limit=1e-4,
                                 **FAST), env_fn=_spread)
    # unset, SAC's critics stay decentralized on the same env
    trainer = make_trainer(TrainConfig(algo="sac", replay_size=1000, **FAST), env_fn=_spread)
    try:
        assert trainer.central is None and trainer.policy.critic_input_size == 0 and trainer.buffer.critic_obs is None
    finally:
        trainer.close()
