"""--algo dt: trained from a dataset file on the command line, evaluated by shoal eval at the target return the run
saved (the dataset's best) or at one given; Box actions follow a high and a low target; exact resume; a policy other
than the Decision Transformer refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from shoal.cli import main
from shoal.datasets import OfflineDataset, save_dataset
from shoal.errors import APIUsageError
from shoal.policies import Policy
from shoal.train import TrainConfig, evaluate, make_trainer, record_dataset, resolve_env, train
from shoal.train.runs.evaluate import load_policy_from_checkpoint
from tests.train.offline.recorded import join, mixed_cartpole, record

#: a small transformer that learns the mixed CartPole data in a few hundred gradient steps
SMALL = dict(env="CartPole-v1", env_kwargs={"max_episode_steps": 200}, algo="dt", context_length=5, hidden_size=32,
             dt_layers=1, learning_rate=3e-3, num_envs=4, tensorboard=False, log_interval=60.0)


class AimEnv(gym.Env):
    """Each step shows a target in [-1, 1] and pays ``-|action - target|`` for the action (Box [-1, 1]): the optimal
    action is the target itself (return 0); uniformly random actions miss by 2/3 a step on average."""

    observation_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._target = self.np_random.uniform(-1.0, 1.0, 1).astype(np.float32)
        return self._target.copy(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = -abs(float(action[0]) - float(self._target[0]))
        self._target = self.np_random.uniform(-1.0, 1.0, 1).astype(np.float32)
        return self._target.copy(), reward, False, False, {}


AIM = "ShoalTestAim-v0"
if AIM not in gym.registry:
    gym.register(AIM, entry_point=AimEnv, max_episode_steps=10)


@pytest.fixture(scope="module")
def mixed() -> OfflineDataset:
    return mixed_cartpole()


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_shoal_train_algo_dt_then_shoal_eval_at_its_own_and_a_given_target(
        tmp_path: Path, mixed: OfflineDataset, capsys: pytest.CaptureFixture[str]) -> None:
    path = save_dataset(mixed, tmp_path / "cartpole-mixed")
    run = str(tmp_path / "run")
    trained = _json(capsys, "train", "CartPole-v1", "--algo", "dt", "--dataset", str(path), "--env-kwargs",
                    '{"max_episode_steps": 200}', "--total-steps", "200", "--horizon", "200", "--context-length", "5",
                    "--hidden-size", "32", "--dt-layers", "1", "--learning-rate", "3e-3", "--eval-interval", "0",
                    "--run-dir", run, "--no-tensorboard", "--json")
    assert trained["ok"] and trained["global_step"] == 200
    policy, config, _ = load_policy_from_checkpoint(run)
    assert config.algo == "dt" and config.target_return is None
    assert policy.target_return == 200.0 and policy.return_scale == 200.0 and policy.max_timestep == 200
    high = _json(capsys, "eval", run, "--episodes", "6", "--json")  # the dataset's best return, saved
    low = _json(capsys, "eval", run, "--episodes", "6", "--target-return", "10", "--json")
    random_play = mixed.episode_returns()[-6:].mean()
    assert high["mean_return"] > 150 > 3 * random_play and low["mean_return"] < 40, (low, high)


def test_box_actions_follow_a_high_target_to_the_optimum_and_a_low_one_away_from_it() -> None:
    # episodes of three qualities: the optimal action (return 0), always -1 (about -10) and uniform random (about -7)
    random_play = record_dataset("random", AIM, 400, seed=1)
    data = join(record(AIM, lambda obs, rng: np.asarray(obs, np.float32), 40, seed=1),
                record(AIM, lambda obs, rng: np.full(1, -1.0, np.float32), 40, seed=1_000), random_play)
    assert data.action_layout.kind == "continuous"
    result = train(TrainConfig(env=AIM, algo="dt", total_steps=300, seed=1, context_length=3, hidden_size=32,
                               dt_layers=1, learning_rate=3e-3, eval_interval=0, tensorboard=False,
                               log_interval=60.0), dataset=data)
    high, low = (evaluate(result.policy, resolve_env(AIM), 8, seed=100, target_return=target)["mean_return"]
                 for target in (0.0, -10.0))
    chance = float(random_play.episode_returns()[random_play.episode_lengths == 10].mean())  # whole episodes
    # measured on seeds 1-5: high -1.3 to -1.8, low -7.0 to -8.7, random play -6.9 to -7.0; an 8-episode mean of
    # random play has a standard error of about 0.5, so 4 is eight of them
    assert high > chance + 4 and high > low + 4, (high, low, chance)


def test_a_resumed_run_continues_exactly(tmp_path: Path, mixed: OfflineDataset) -> None:
    common = dict(SMALL, horizon=50, eval_interval=0, seed=2)
    straight = train(TrainConfig(total_steps=100, **common), dataset=mixed)
    run_dir = str(tmp_path / "run")
    train(TrainConfig(total_steps=50, run_dir=run_dir, **common), dataset=mixed)
    resumed = train(TrainConfig(total_steps=100, run_dir=run_dir, resume=True, **common), dataset=mixed)
    assert resumed.exact_resume and resumed.global_step == 100
    a, b = straight.policy.state_dict(), resumed.policy.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"


def test_a_given_target_return_is_what_the_model_keeps_and_other_policies_are_refused(
        mixed: OfflineDataset) -> None:
    trainer = make_trainer(TrainConfig(total_steps=10, target_return=120.0, return_scale=50.0, **SMALL),
                           dataset=mixed)
    try:
        assert trainer.policy.target_return == 120.0 and trainer.policy.return_scale == 50.0
        assert trainer.acting.context.target_return == 120.0
        assert trainer.describe()[-1] == ("decision transformer: 5 steps of context, target return 120 "
                                          "(--target-return), returns-to-go divided by 50")
    finally:
        trainer.close()
    policy = Policy.from_env(type("Env", (), {"obs_layout": mixed.obs_layout, "action_layout": mixed.action_layout}))
    with pytest.raises(APIUsageError, match=r"algo='dt' trains a shoal\.policies\.decision_transformer"):
        make_trainer(TrainConfig(total_steps=10, **SMALL), policy=policy, dataset=mixed)
