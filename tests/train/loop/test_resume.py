"""Checkpoints: resume equals uninterrupted training; contents and rotation (crashes while saving and foreign or
damaged checkpoints: tests/faults/test_checkpoints.py)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from shoal.cli import main
from shoal.errors import APIUsageError
from shoal.train import TrainConfig, train
from shoal.train.runs.checkpoint import list_checkpoints, load_checkpoint
from shoal.train.runs.evaluate import load_policy_from_checkpoint
from shoal.train.runs.logger import read_scalars


class Crash(Exception):
    pass


def crash_after(update: int) -> Any:
    def callback(record: Any) -> None:
        if record.scalars["charts/update"] == update:
            raise Crash(f"simulated crash after update {update}")

    return callback


def config(run_dir: Path, **overrides: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        env="CartPole-v1",
        total_steps=64 * 6,
        num_envs=4,
        horizon=16,
        minibatch_size=32,
        update_epochs=2,
        seed=5,
        run_dir=str(run_dir),
        checkpoint_interval=1,
        keep_checkpoints=3,
        log_interval=0.0,
        tensorboard=False,
    )
    base.update(overrides)
    return TrainConfig(**base)


def weights(result: Any) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in result.policy.state_dict().items()}


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"env": "memory", "recurrent": True},
        {"env": "squad", "advantage": "vtrace", "prio_alpha": 0.5},
        {"async_learner": True},
        {"env": "memory", "recurrent": True, "async_learner": True},
        {"env": "squad", "algo": "mappo", "async_learner": True},
        # the preset's reward normalization and running observation statistics (buffers of the policy)
        {"env": "MountainCar-v0"},
        # as the preset ran before obs_norm: SuperSuit's normalize_obs_v0 wrapper, which holds a closure
        {"env": "MountainCar-v0", "obs_norm": False, "wrappers": "normalize_obs_v0(env_min=-1.0, env_max=1.0)"},
        {"reward_norm": True, "async_learner": True},
    ],
    ids=["cartpole", "memory-lstm", "squad-vtrace-prio", "cartpole-async", "memory-lstm-async", "squad-mappo-async",
         "mountaincar-preset", "mountaincar-wrapper", "cartpole-reward-norm-async"],
)
def test_resume_equals_uninterrupted_training(tmp_path: Path, overrides: dict[str, Any]) -> None:
    whole = train(config(tmp_path / "whole", **overrides))
    with pytest.raises(Crash):
        train(config(tmp_path / "split", **overrides), callbacks=[crash_after(2)])
    resumed = train(config(tmp_path / "split", resume=True, **overrides))
    assert resumed.resumed_from is not None and resumed.exact_resume
    assert resumed.global_step == whole.global_step and resumed.updates == whole.updates
    a, b = weights(whole), weights(resumed)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # the CSV holds each update once, in order, across the crash
    steps = [r["step"] for r in read_scalars(tmp_path / "split") if r["name"] == "charts/update"]
    assert steps == sorted(set(steps)) and len(steps) == whole.updates


def test_checkpoint_contents_and_rotation(tmp_path: Path) -> None:
    train(config(tmp_path / "run", total_steps=64 * 5))
    files = list_checkpoints(tmp_path / "run")
    assert [f.name for f in files] == ["update_000003.pt", "update_000004.pt", "update_000005.pt"]
    payload = load_checkpoint(files[-1])
    for key in ("model", "optimizer", "global_step", "rng", "config", "env_signature", "trainer"):
        assert key in payload
    assert payload["config"]["env"] == "CartPole-v1" and payload["global_step"] == 64 * 5
    policy, cfg, _ = load_policy_from_checkpoint(tmp_path / "run")
    assert cfg.total_steps == 64 * 5 and sum(p.numel() for p in policy.parameters()) > 0


def test_new_run_refuses_to_overwrite_checkpoints_unless_asked(tmp_path: Path) -> None:
    train(config(tmp_path / "run", total_steps=64 * 3))
    with pytest.raises(APIUsageError, match="--resume"):
        train(config(tmp_path / "run", total_steps=64))
    result = train(config(tmp_path / "run", total_steps=64, overwrite=True))
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["update_000001.pt"]
    assert result.updates == 1 and max(r["step"] for r in read_scalars(tmp_path / "run")) == 64


def test_wandb_without_the_package_is_a_clear_error(tmp_path: Path) -> None:
    try:
        import wandb  # noqa: F401
    except ImportError:
        with pytest.raises(APIUsageError, match="pip install wandb"):
            train(config(tmp_path / "run", total_steps=64, wandb=True))
    else:  # pragma: no cover - depends on the installation
        pytest.skip("wandb is installed")


def test_env_snapshots_of_another_shoal_version_restart_the_envs(caplog: pytest.LogCaptureFixture) -> None:
    import pickle

    import gymnasium as gym

    from shoal import vector
    from shoal.train.runs.checkpoint import restore_env_state, snapshot_env_state

    def make() -> Any:
        v = vector.make(lambda: gym.make("CartPole-v1"), 2, backend="serial")
        v.async_reset(0)
        v.recv()
        return v

    source, fresh, old = make(), make(), make()
    try:
        blob = snapshot_env_state(source)
        assert blob is not None and restore_env_state(fresh, blob)
        untagged = pickle.dumps(source.get_state())  # what an older shoal wrote
        assert not restore_env_state(old, untagged)
        assert "another version of shoal" in caplog.text
    finally:
        for v in (source, fresh, old):
            v.close()


def test_env_snapshots_of_another_python_restart_the_envs(monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """A snapshot signed with this user's key but written by another Python version is not unpickled: closures
    in it are bytecode, which another interpreter may crash on."""
    import gymnasium as gym

    from shoal import vector
    from shoal.train.runs import checkpoint

    def make() -> Any:
        v = vector.make(lambda: gym.make("CartPole-v1"), 2, backend="serial")
        v.async_reset(0)
        v.recv()
        return v

    assert sys.implementation.cache_tag in checkpoint.ENV_STATE_TAG.decode()
    source, fresh = make(), make()
    try:
        with monkeypatch.context() as patch:
            patch.setattr(checkpoint, "ENV_STATE_TAG", b"shoal-env-state-4 cpython-399\n")
            blob = checkpoint.snapshot_env_state(source)  # signed with this user's key, as another Python would
        assert blob is not None
        assert not checkpoint.restore_env_state(fresh, blob)
        assert "another version of shoal, Python or cloudpickle" in caplog.text
    finally:
        for v in (source, fresh):
            v.close()


def test_resuming_with_another_total_steps_warns_and_anneals_over_the_new_budget(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    train(config(run_dir, total_steps=64 * 3))
    with caplog.at_level(logging.WARNING):
        result = train(config(run_dir, resume=True, total_steps=64 * 6))
    lr = result.config.learning_rate
    assert "at step 192 with total_steps 384 instead of the run's 192" in caplog.text
    assert f"continues at {lr / 2:.3g} where the original schedule was at 0" in caplog.text
    assert "Resume without --total-steps to keep the original schedule" in caplog.text
    rates = {r["step"]: r["value"] for r in read_scalars(run_dir) if r["name"] == "charts/learning_rate"}
    assert rates[64 * 3 + 64] == pytest.approx(lr * (1 - 192 / 384))  # the first update after the resume

    caplog.clear()  # the same budget again: nothing to say, nothing to do
    with caplog.at_level(logging.WARNING):
        assert train(config(run_dir, resume=True, total_steps=64 * 6)).global_step == 64 * 6
    assert "total_steps" not in caplog.text
    with caplog.at_level(logging.WARNING):
        train(config(run_dir, resume=True, total_steps=64 * 2))
    assert "at step 384, which --total-steps 128 does not exceed: there is nothing left to train" in caplog.text

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--total-steps may change, and then sets the new budget" in help_text
    assert "omit --total-steps to keep the original schedule" in help_text


def test_resuming_a_run_that_predates_its_envs_preset_names_the_preset(tmp_path: Path) -> None:
    # a run trained without Pendulum's preset (as one made before the preset existed) resumed with the default
    # preset="auto": the refusal says the differing values come from the preset and how to keep the run's own
    from shoal.errors import CheckpointError

    run = tmp_path / "run"
    small = {"env": "Pendulum-v1", "total_steps": 256, "num_envs": 2, "horizon": 64, "tensorboard": False,
             "log_interval": 0.0, "run_dir": str(run), "eval_episodes": 0}
    train(TrainConfig(preset="none", **small))
    with pytest.raises(CheckpointError, match=r"gamma.*come from this version's preset for Pendulum-v1.*"
                                              r"--preset none"):
        train(TrainConfig(resume=True, **{**small, "total_steps": 512}))
    result = train(TrainConfig(resume=True, preset="none", **{**small, "total_steps": 512}))
    assert result.global_step == 512


def test_resuming_a_run_an_earlier_preset_trained_names_the_runs_own_values(tmp_path: Path) -> None:
    # a MountainCar run as its preset trained before obs_norm (its wrapper scaled the observations), resumed with
    # this version's preset: --preset none would drop the rest of the preset it trained with, so the refusal names
    # the run's own values, and they resume it
    from shoal.errors import CheckpointError

    wrapper = "normalize_obs_v0(env_min=-1.0, env_max=1.0)"
    small = {"env": "MountainCar-v0", "total_steps": 512, "tensorboard": False, "log_interval": 0.0,
             "run_dir": str(tmp_path / "run"), "eval_episodes": 0}
    train(TrainConfig(obs_norm=False, wrappers=wrapper, **small))
    with pytest.raises(CheckpointError, match=r"obs_norm now come from this version's preset for MountainCar-v0, "
                                              r"which differs from what the run started with: resume with the run's "
                                              r"values \(wrappers='normalize_obs_v0\(env_min=-1.0, env_max=1.0\)', "
                                              r"obs_norm=False\)"):
        train(TrainConfig(resume=True, **{**small, "total_steps": 1024}))
    result = train(TrainConfig(resume=True, obs_norm=False, wrappers=wrapper, **{**small, "total_steps": 1024}))
    assert result.global_step == 1024


@pytest.mark.parametrize("league", [False, True], ids=["ppo", "league"])
def test_a_board_game_run_saved_with_a_separate_critic_resumes_with_it(tmp_path: Path, league: bool) -> None:
    # board policies share their CNN with the critic by default now; a run saved when they did not (built here with
    # separate_critic=True, as the default was) must resume with its own network, exactly
    from shoal import vector
    from shoal.policies import Policy
    from shoal.train.runs.resolve import resolve_env

    def separate() -> Policy:
        with vector.make(resolve_env("pettingzoo.classic.connect_four_v3"), 2) as vec:
            return Policy.from_env(vec, hidden_size=64, lstm_size=64, separate_critic=True)

    common = dict(env="pettingzoo.classic.connect_four_v3", num_envs=2, horizon=16, minibatch_size=32,
                  hidden_size=64, league=league, league_rating_games=2, eval_episodes=0, preset="none")
    if league:  # a mix with no search anchors: their calibration games would be most of this test's time
        common["league_opponents"] = "self:0.5,random:0.5"
    torch.manual_seed(5)
    whole = train(config(tmp_path / "whole", **common), policy=separate())
    torch.manual_seed(5)
    with pytest.raises(Crash):
        train(config(tmp_path / "split", **common), policy=separate(), callbacks=[crash_after(2)])
    resumed = train(config(tmp_path / "split", resume=True, **common))  # policy=None: rebuilt from the checkpoint
    assert resumed.policy.separate_critic and resumed.exact_resume and resumed.global_step == whole.global_step
    a, b = weights(whole), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)
