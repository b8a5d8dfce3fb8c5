"""TrainConfig: documented fields, validation, round trips; logging sinks and the dashboard."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest

from shoal.cli import main
from shoal.errors import APIUsageError, NonFiniteError
from shoal.train import TrainConfig, train
from shoal.train.config import ALGO_DEFAULTS, ALGOS, field_docs, plain_text
from shoal.train.runs.logger import CSVSink, Dashboard, LogRecord, read_scalars
from shoal.train.runs.plot import plot_run
from tests.vector.envs_for_tests import poisoned_cartpole


def test_every_field_has_a_docstring() -> None:
    docs = field_docs(TrainConfig)
    missing = [f.name for f in dataclasses.fields(TrainConfig) if not docs.get(f.name)]
    assert missing == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"value_norm": "batch"}, "value_norm"),
        ({"critic_input": "global"}, "critic_input"),
        ({"algo": "dqn"}, "unknown"),
        ({"total_steps": 0}, "total_steps"),
        ({"gamma": 1.5}, "gamma"),
        ({"dual_clip": 0.5}, "dual_clip"),
        ({"advantage": "td"}, "advantage"),
        ({"batch_size": 64, "minibatch_size": 128}, "minibatch_size"),
        ({"recurrent": True, "horizon": 64, "minibatch_size": 32}, "whole segments"),
        ({"wandb": True}, "run_dir"),
        ({"reward_clip": -1.0}, "reward_clip"),
        ({"trace_learner": "yes"}, "trace_learner must be True or False"),
        ({"norm_adv": 1}, "norm_adv must be True or False"),
        ({"target_return": 100.0}, "target_return=100.0 conditions the Decision Transformer; algo='ppo' takes none"),
        ({"algo": "bc", "return_scale": 10.0}, "return_scale=10.0 conditions the Decision Transformer"),
        ({"algo": "dt", "context_length": 0}, "context_length must be a positive int"),
        ({"algo": "dt", "dt_heads": 3}, "dt_heads=3 must divide hidden_size=64"),
        ({"algo": "dt", "target_return": float("nan")}, "target_return must be a finite number"),
        ({"algo": "dt", "return_scale": 0.0}, "return_scale must be a positive number"),
        ({"algo": "dt", "agent_ids": True}, "does not embed agent ids"),
    ],
)
def test_validation_names_the_field(changes: dict, message: str) -> None:
    with pytest.raises(APIUsageError, match=message):
        TrainConfig(**changes).validate()


def test_algorithm_defaults_are_resolved_by_the_config_for_the_api_and_the_cli(tmp_path: Path) -> None:
    # before, the API trained MAPPO with PPO's numbers; only the command line applied MAPPO's
    for algo in ALGOS:
        resolved = TrainConfig(env="squad", algo=algo).resolved()
        assert {name: getattr(resolved, name) for name in ALGO_DEFAULTS[algo]} == ALGO_DEFAULTS[algo]
    assert TrainConfig(algo="mappo", hidden_size=32).resolved().hidden_size == 32  # a given value wins
    assert TrainConfig(algo="mappo", num_envs=4, horizon=10, minibatch_size=60).resolved(3).batch_size == 120
    run = tmp_path / "cli"
    assert main(["train", "squad", "--algo", "mappo", "--total-steps", "1", "--seed", "3", "--run-dir", str(run),
                 "--no-tensorboard", "--json"]) == 0
    from_cli = TrainConfig.load(run / "config.json")
    api = train(TrainConfig(env="squad", algo="mappo", total_steps=1, seed=3, run_dir=str(tmp_path / "api"),
                            tensorboard=False))
    from_api = TrainConfig.load(tmp_path / "api" / "config.json")
    assert from_cli.replace(run_dir=None) == from_api.replace(run_dir=None) == api.config.replace(run_dir=None)
    assert from_api.hidden_size == ALGO_DEFAULTS["mappo"]["hidden_size"] and from_api.batch_size == 16 * 3 * 50


def test_batch_size_that_steps_cannot_fill_exactly_is_refused() -> None:
    with pytest.raises(APIUsageError, match=r"not a multiple of num_envs=8.*--batch-size 96 or 104"):
        TrainConfig(batch_size=100).resolved(agents_per_env=1)
    with pytest.raises(APIUsageError, match=r"use --batch-size 8$"):
        TrainConfig(batch_size=7, minibatch_size=4).resolved(agents_per_env=1)
    assert TrainConfig(batch_size=104, minibatch_size=52).resolved(agents_per_env=1).batch_size == 104


def test_choices_come_from_the_literal_types() -> None:
    with pytest.raises(APIUsageError, match=r"advantage='td' is unknown; valid choices: \['gae', 'vtrace'\]"):
        TrainConfig(advantage="td").validate()
    with pytest.raises(APIUsageError, match="backend"):
        TrainConfig(backend="threads").resolved()


def test_help_texts_are_plain_words(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--learning-rate" in text and "ppo 0.004, mappo 0.0025" in text
    for markup in ("``", ":mod:", ":class:", ":data:", ":func:"):
        assert markup not in text, markup
    assert plain_text("see :class:`~shoal.train.Trainer`, :mod:`shoal.train` and ``x``") == \
        "see Trainer, shoal.train and x"


def test_round_trip(tmp_path: Path) -> None:
    cfg = TrainConfig(env="memory", env_kwargs={"length": 6}, recurrent=True, dual_clip=3.0)
    cfg.save(tmp_path / "c.json")
    assert TrainConfig.load(tmp_path / "c.json") == cfg
    with pytest.raises(APIUsageError, match="unknown config field"):
        TrainConfig.from_dict({"learning_rat": 1.0})


def test_csv_sink_keeps_every_scalar_and_drops_rows_after_a_resume_point(tmp_path: Path) -> None:
    sink = CSVSink(tmp_path)
    for step in (10, 20, 30):
        sink(LogRecord(step, {"a/x": step * 1.5, "a/y": -1.0}, 100, float(step)))
    sink.close()
    assert len(read_scalars(tmp_path)) == 6
    CSVSink(tmp_path, resume_step=20).close()
    assert sorted({r["step"] for r in read_scalars(tmp_path)}) == [10, 20]
    assert plot_run(tmp_path).stat().st_size > 1000


def test_dashboard_draws_progress_and_metrics() -> None:
    record = LogRecord(
        50,
        {
            "perf/sps": 1234.0,
            "charts/episode_return": 42.0,
            "losses/approx_kl": 0.01,
            "losses/clipfrac": 0.1,
            "perf/env_fraction": 0.3,
            "perf/learn_fraction": 0.5,
        },
        100,
        3.0,
    )
    stream = io.StringIO()
    Dashboard(stream, title="t", live=True)(record)
    text = stream.getvalue()
    assert "50.0%" in text and "1,234" in text and "42" in text and "env 30%" in text and "█" in text
    stream = io.StringIO()
    Dashboard(stream, live=False)(record)
    assert stream.getvalue().count("\n") == 1 and "return 42" in stream.getvalue()


def test_training_fails_loudly_on_a_nan_reward_and_can_be_told_not_to() -> None:
    # (before, a NaN reward ended in an unrelated "no next value" error deep in the rollout buffer)
    with pytest.raises(NonFiniteError, match=r"reward"):
        train(TrainConfig(num_envs=2, horizon=8, minibatch_size=16, total_steps=64, tensorboard=False),
              env_fn=poisoned_cartpole)
    with pytest.raises(APIUsageError, match="env_timeout must be a positive number"):
        TrainConfig(env_timeout=0).validate()
    assert TrainConfig(env_timeout=None, check_finite=False).resolved().env_timeout is None


# ---- env presets -------------------------------------------------------------------------------------------------


def test_an_env_preset_fills_only_the_fields_left_unset() -> None:
    from shoal.train.config import ENV_PRESETS

    preset = ENV_PRESETS["ppo"]["Pendulum-v1"]
    resolved = TrainConfig(env="Pendulum-v1").resolved()
    for name, value in preset.items():
        assert getattr(resolved, name) == value, name
    assert resolved.clip_coef == TrainConfig().clip_coef  # not in the preset: the general default
    mine = TrainConfig(env="Pendulum-v1", gamma=0.97, num_envs=2).resolved()
    assert (mine.gamma, mine.num_envs, mine.horizon) == (0.97, 2, preset["horizon"])
    assert TrainConfig(env="Pendulum-v1", preset="none").resolved().gamma == ALGO_DEFAULTS["ppo"]["gamma"]
    # presets are per algorithm: SAC on Pendulum keeps SAC's defaults but for its own preset's layer width
    sac = TrainConfig(env="Pendulum-v1", algo="sac").resolved()
    assert (sac.gamma, sac.num_envs) == (ALGO_DEFAULTS["sac"]["gamma"], ALGO_DEFAULTS["sac"]["num_envs"])
    assert sac.hidden_size == ENV_PRESETS["sac"]["Pendulum-v1"]["hidden_size"] != ALGO_DEFAULTS["sac"]["hidden_size"]
    assert resolved.resolved() == resolved  # resolving twice changes nothing
    with pytest.raises(APIUsageError, match="preset"):
        TrainConfig(env="Pendulum-v1", preset="zoo").resolved()


def test_the_command_line_prints_the_preset_it_applies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "Pendulum-v1", "--total-steps", "512", "--horizon", "64", "--update-epochs", "1",
                 "--run-dir", str(tmp_path / "run"), "--no-dashboard"])
    assert code == 0
    err = capsys.readouterr()
    text = err.out + err.err
    assert "preset for Pendulum-v1 (ppo): num_envs 4, learning_rate 0.001, gamma 0.9" in text
    taken, replaced = text.split("preset for")[1].split("\n")[0].split("; this run's settings replace its ")
    assert "horizon" not in taken and replaced == "horizon 1024, update_epochs 10"  # given by flags
    saved = TrainConfig.load(tmp_path / "run" / "config.json")
    assert (saved.gamma, saved.horizon, saved.value_norm) == (0.9, 64, "running")


def test_the_command_line_says_which_preset_settings_a_flag_replaces(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # --no-obs-norm drops MountainCar-v0's observation normalization: the preset line says so
    code = main(["train", "MountainCar-v0", "--total-steps", "256", "--no-obs-norm",
                 "--run-dir", str(tmp_path / "run"), "--no-dashboard"])
    assert code == 0
    out = capsys.readouterr()
    line = (out.out + out.err).split("preset for MountainCar-v0 (ppo): ")[1].split("\n")[0]
    assert line.endswith("; this run's settings replace its obs_norm True"), line
    assert "activation tanh" in line
    assert TrainConfig.load(tmp_path / "run" / "config.json").obs_norm is False


def test_the_mountaincar_preset_trains_a_tanh_network_on_normalized_observations() -> None:
    from torch import nn

    from shoal.train import Trainer

    trainer = Trainer(TrainConfig(env="MountainCar-v0", total_steps=512, seed=1, trace_actor=False))
    try:
        assert trainer.preset["activation"] == "tanh" and trainer.reward_norm is not None
        assert trainer.policy.config["activation"] == "tanh" and isinstance(trainer.policy.trunk[1], nn.Tanh)
        assert trainer.policy.config["obs_norm"] is True and trainer.config.wrappers is None
        trainer.collect()
        data = trainer.buffer.data()
        assert data.rewards.shape == (16, 16)  # 16 envs of 16 steps
        obs = data.obs.reshape(-1, 2).astype(np.float64)
        assert np.abs(obs[:, 0]).max() > 0.3  # raw positions (-1.2..0.6) in the buffer: the policy normalizes
        assert (data.rewards < 0).all() and (data.rewards != -1.0).any()  # normalized, not the raw -1
        stats = trainer.policy.encoder.leaf_encoders[0].obs_stats
        assert int(stats.count) == 0  # the first rollout is acted on raw values
        trainer.learn()
        assert int(stats.count) == 256
        np.testing.assert_allclose(stats.mean.numpy(), obs.mean(0), rtol=1e-6)
        np.testing.assert_allclose(stats.var.numpy(), obs.var(0), rtol=1e-5)
    finally:
        trainer.close()
    plain = TrainConfig(env="MountainCar-v0", preset="none").resolved()
    assert (plain.activation, plain.reward_norm, plain.wrappers, plain.obs_norm) == ("relu", False, None, False)
    # a run saved before the preset (and its fields) existed keeps what it trained with: no wrappers, ReLU
    old = {k: v for k, v in plain.replace(preset="auto").to_dict().items()
           if k not in ("activation", "reward_norm", "obs_norm")}
    loaded = TrainConfig.from_dict(old).resolved()
    assert (loaded.activation, loaded.reward_norm, loaded.wrappers, loaded.num_envs) == ("relu", False, None, 8)
    assert loaded.obs_norm is False
    # one saved with the preset before obs_norm existed scaled observations by a wrapper: it resumes with it
    before = {k: v for k, v in TrainConfig(env="MountainCar-v0").to_dict().items() if k != "obs_norm"}
    loaded = TrainConfig.from_dict(before).resolved()
    assert (loaded.obs_norm, loaded.wrappers) == (False, "normalize_obs_v0(env_min=-1.0, env_max=1.0)")
    assert (loaded.activation, loaded.num_envs) == ("tanh", 16)
    mine = {k: v for k, v in TrainConfig(env="MountainCar-v0", wrappers="").to_dict().items() if k != "obs_norm"}
    assert TrainConfig.from_dict(mine).resolved().wrappers == ""  # its own wrappers stay its own


def test_mappo_defaults_to_the_residual_critic_and_older_runs_keep_a_single_critic() -> None:
    assert TrainConfig(algo="mappo").resolved().critic_residual is True
    assert TrainConfig(algo="mappo", critic_residual=False).resolved().critic_residual is False
    assert TrainConfig().resolved().critic_residual is False
    with pytest.raises(APIUsageError, match="critic_residual"):
        TrainConfig(algo="ppo", critic_residual=True).validate()
    old = {k: v for k, v in TrainConfig(algo="mappo").to_dict().items() if k != "critic_residual"}
    assert TrainConfig.from_dict(old).resolved().critic_residual is False


def test_connect_four_takes_its_preset_by_its_pettingzoo_module_name() -> None:
    from shoal.train.config import ENV_PRESETS

    env = "pettingzoo.classic.connect_four_v3"
    preset = ENV_PRESETS["ppo"][env]
    resolved = TrainConfig(env=env, league=True).resolved(agents_per_env=2)
    assert {name: getattr(resolved, name) for name in preset} == preset
    assert resolved.learning_rate < ALGO_DEFAULTS["ppo"]["learning_rate"]
    assert resolved.batch_size == preset["num_envs"] * 2 * resolved.horizon
    assert TrainConfig(env=env, hidden_size=64).resolved().hidden_size == 64  # a flag replaces the preset's value
    plain = TrainConfig(env=env, preset="none").resolved()
    assert {name: getattr(plain, name) for name in preset} == {name: ALGO_DEFAULTS["ppo"][name] for name in preset}
    # saved unresolved before activation/reward_norm existed, so before this preset: it loads as it trained
    old = {k: v for k, v in TrainConfig(env=env).to_dict().items() if k not in ("activation", "reward_norm")}
    assert TrainConfig.from_dict(old).resolved().hidden_size == ALGO_DEFAULTS["ppo"]["hidden_size"]


def test_cartpole_takes_its_preset_and_a_run_from_before_it_resumes_only_with_its_own_values(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from shoal.errors import CheckpointError
    from shoal.train.config import ENV_PRESETS

    preset = ENV_PRESETS["ppo"]["CartPole-v1"]
    resolved = TrainConfig(env="CartPole-v1").resolved()
    assert (resolved.ent_coef, resolved.update_epochs) == (0.0, 4) == (preset["ent_coef"], preset["update_epochs"])
    assert resolved.learning_rate == ALGO_DEFAULTS["ppo"]["learning_rate"]  # the rest: the general defaults
    for algo, preset_name in (("ppo", "none"), ("sac", "auto")):  # PPO's preset only
        plain = TrainConfig(env="CartPole-v1", algo=algo, preset=preset_name).resolved()
        defaults = ALGO_DEFAULTS[algo]
        assert (plain.ent_coef, plain.update_epochs) == (defaults["ent_coef"], defaults["update_epochs"]), algo
    # a run trained with the defaults of before the preset is not resumed with other values in silence
    small = {"env": "CartPole-v1", "total_steps": 512, "tensorboard": False, "log_interval": 0.0,
             "run_dir": str(tmp_path / "run"), "eval_episodes": 0}
    train(TrainConfig(ent_coef=0.01, update_epochs=3, **small))
    with pytest.raises(CheckpointError, match=r"update_epochs=3 \(now 4\), ent_coef=0.01 \(now 0.0\).*"
                                              r"which differs from what the run started with: "
                                              r"resume with the run's values \(update_epochs=3, ent_coef=0.01\)"):
        train(TrainConfig(resume=True, **{**small, "total_steps": 1024}))
    assert train(TrainConfig(resume=True, ent_coef=0.01, update_epochs=3,
                             **{**small, "total_steps": 1024})).global_step == 1024
    # the command line resumes with the run's config.json, and says whose settings replace the preset's
    capsys.readouterr()
    assert main(["train", "CartPole-v1", "--run-dir", small["run_dir"], "--resume", "--total-steps", "1536",
                 "--no-dashboard"]) == 0
    out = capsys.readouterr()
    assert "this run's settings replace its ent_coef 0.0, update_epochs 4" in out.out + out.err
    assert TrainConfig.load(tmp_path / "run" / "config.json").update_epochs == 3
    # saved unresolved before activation/reward_norm existed, so before this preset: it loads as it trained
    old = {k: v for k, v in TrainConfig(env="CartPole-v1").to_dict().items() if k not in ("activation", "reward_norm")}
    loaded = TrainConfig.from_dict(old).resolved()
    assert (loaded.ent_coef, loaded.update_epochs) == (ALGO_DEFAULTS["ppo"]["ent_coef"],
                                                       ALGO_DEFAULTS["ppo"]["update_epochs"])


def test_a_mappo_spread_run_saved_with_50_step_rollouts_resumes_from_python_only_with_them(tmp_path: Path) -> None:
    from shoal.errors import CheckpointError

    small = {"env": "mpe2.simple_spread_v3", "algo": "mappo", "env_kwargs": {"max_cycles": 25}, "num_envs": 2,
             "update_epochs": 1, "minibatch_size": 100, "tensorboard": False, "log_interval": 0.0, "eval_episodes": 0,
             "run_dir": str(tmp_path / "run")}
    train(TrainConfig(horizon=50, total_steps=300, **small))  # as MAPPO's default trained it before the preset
    with pytest.raises(CheckpointError, match=r"horizon=50 \(now 100\).*resume with the run's values"):
        train(TrainConfig(resume=True, total_steps=600, **small))
    assert train(TrainConfig(resume=True, horizon=50, total_steps=600, **small)).global_step >= 600


def test_mappo_on_simple_spread_takes_its_preset_and_ippo_does_not() -> None:
    from shoal.train.config import ENV_PRESETS

    env = "mpe2.simple_spread_v3"
    assert TrainConfig(env=env, algo="mappo").resolved(3).gamma == 0.95 == ENV_PRESETS["mappo"][env]["gamma"]
    resolved = TrainConfig(env=env, algo="mappo").resolved(3)
    assert (resolved.horizon, resolved.batch_size) == (100, 16 * 3 * 100)  # four minibatches of 1,200
    assert TrainConfig(env=env, algo="mappo", gamma=0.99).resolved().gamma == 0.99  # a flag replaces it
    assert TrainConfig(env=env, algo="mappo", preset="none").resolved().gamma == ALGO_DEFAULTS["mappo"]["gamma"]
    assert TrainConfig(env=env).resolved().gamma == ALGO_DEFAULTS["ppo"]["gamma"]  # IPPO: PPO's own defaults
    # saved unresolved before activation/reward_norm existed, so before this preset: it loads as it trained
    old = {k: v for k, v in TrainConfig(env=env, algo="mappo").to_dict().items()
           if k not in ("activation", "reward_norm")}
    assert TrainConfig.from_dict(old).resolved().gamma == ALGO_DEFAULTS["mappo"]["gamma"]


def test_a_config_saved_before_presets_resumes_without_one(tmp_path: Path) -> None:
    config = TrainConfig(env="Acrobot-v1", gamma=0.99, gae_lambda=0.95)
    data = config.to_dict()
    del data["preset"]  # as written before env presets existed
    loaded = TrainConfig.from_dict(data)
    assert loaded.preset == "none" and loaded.resolved().value_norm == "auto"
    assert TrainConfig.from_dict(config.to_dict()).resolved().value_norm == "running"
    old_sac = {**TrainConfig(env="Pendulum-v1", algo="sac", critic_input="auto").to_dict()}
    del old_sac["preset"]  # SAC saved "auto", which it ignored, before it had centralized critics
    assert TrainConfig.from_dict(old_sac).critic_input is None


@pytest.mark.parametrize(("algo", "env", "field", "preset_value"), [
    ("ppo", "Pendulum-v1", "horizon", 1024), ("sac", "Pendulum-v1", "hidden_size", 64),
])
def test_a_config_saved_before_activation_keeps_the_older_presets(algo: str, env: str, field: str,
                                                                  preset_value: int) -> None:
    # saved unresolved (TrainConfig.save) before activation/reward_norm existed, after these presets did
    old = {k: v for k, v in TrainConfig(env=env, algo=algo).to_dict().items() if k not in ("activation", "reward_norm")}
    loaded = TrainConfig.from_dict(old)
    assert loaded.preset == "auto" and getattr(loaded.resolved(), field) == preset_value
    assert (loaded.activation, loaded.reward_norm) == ("relu", False)


def test_the_dashboard_shows_the_statistics_its_algorithm_logs() -> None:
    # SAC logs no PPO statistics: its progress used to print "pg -  vf -  kl -  clip -" for the whole run
    sac = LogRecord(10, {"perf/sps": 100.0, "losses/q_loss": 1.25, "losses/actor_loss": -3.5, "losses/alpha": 0.2,
                         "losses/entropy": -0.75, "losses/q_mean": 9.0}, 100, 1.0)
    stream = io.StringIO()
    Dashboard(stream, live=False)(sac)
    line = stream.getvalue()
    assert "q_loss 1.25  actor_loss -3.5  alpha 0.2  entropy -0.75" in line and "pg" not in line
    live = "\n".join(Dashboard(io.StringIO(), live=True).render(sac))
    assert "q loss 1.25" in live and "q mean 9" in live and "KL" not in live
    ppo = LogRecord(10, {"losses/entropy": 0.5, "losses/clipfrac": 0.1, "losses/policy_loss": 0.02,
                         "losses/approx_kl": 0.01, "losses/value_loss": 3.0}, 100, 1.0)
    stream = io.StringIO()
    Dashboard(stream, live=False)(ppo)
    assert "pg 0.02  vf 3  kl 0.01  clip 0.1" in stream.getvalue()


@pytest.mark.parametrize(("algo", "network"), [("sac", "ReLU MLPs"), ("dt", "a GELU transformer")])
def test_tanh_is_refused_by_the_algorithms_with_networks_of_their_own(algo: str, network: str) -> None:
    config = TrainConfig(env="Pendulum-v1", algo=algo, activation="tanh", dataset="data" if algo == "dt" else None)
    with pytest.raises(APIUsageError, match=rf"activation='tanh': algo='{algo}' .*\({network}\).*drop --activation"):
        config.validate()
    TrainConfig(env="Pendulum-v1", algo=algo, activation="relu", dataset=config.dataset).validate()
