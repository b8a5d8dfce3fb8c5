"""The command line end to end: train, resume, eval, plot, list; errors end with a JSON line too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shoal.cli import main

ROOT = Path(__file__).resolve().parents[1]
FAST = [
    "--num-envs",
    "2",
    "--horizon",
    "16",
    "--minibatch-size",
    "32",
    "--update-epochs",
    "2",
    "--no-tensorboard",
]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    last = out.out.strip().splitlines()[-1]
    return code, json.loads(last), out.out + out.err


def test_train_eval_plot_on_cartpole(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "cartpole"
    code, payload, text = run(
        capsys,
        "train",
        "CartPole-v1",
        "--total-steps",
        "128",
        "--seed",
        "3",
        "--run-dir",
        str(run_dir),
        "--eval-episodes",
        "3",
        "--tensorboard",
        *FAST[:-1],
    )
    assert code == 0 and payload["ok"] and payload["command"] == "train"
    assert payload["global_step"] >= 128 and payload["eval_episodes"] == 3
    assert "evaluation: mean return" in text and "steps" in text  # the dashboard and the summary
    assert (run_dir / "config.json").is_file() and (run_dir / "scalars.csv").is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    # resume with a bigger budget continues from the checkpoint
    code, payload, _ = run(
        capsys,
        "train",
        "CartPole-v1",
        "--run-dir",
        str(run_dir),
        "--resume",
        "--total-steps",
        "192",
        "--json",
    )
    assert code == 0 and payload["resumed_from"] and payload["global_step"] >= 192
    code, payload, text = run(capsys, "eval", str(run_dir), "--episodes", "4")
    assert code == 0 and payload["episodes"] == 4 and payload["mean_return"] > 0
    assert "mean return" in text
    code, payload, _ = run(capsys, "plot", str(run_dir), "--json")
    assert code == 0 and Path(payload["png"]).stat().st_size > 1000


@pytest.mark.filterwarnings("ignore:The old environment creation API:DeprecationWarning")
@pytest.mark.parametrize("extra", [[], ["--async-learner"]], ids=["one-process", "async-learner"])
def test_train_knights_archers_zombies(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str]) -> None:
    run_dir = tmp_path / "kaz"
    code, payload, _ = run(
        capsys,
        "train",
        "pettingzoo.butterfly.knights_archers_zombies_v11",
        "--total-steps",
        "256",
        "--run-dir",
        str(run_dir),
        "--json",
        *FAST,
        *extra,
    )
    assert code == 0 and payload["ok"] and payload["updates"] >= 2
    code, payload, _ = run(capsys, "eval", payload["checkpoint"], "--episodes", "1", "--json")
    assert code == 0 and payload["episodes"] == 1


def test_train_and_eval_an_atari_game_through_supersuit_wrappers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Gymnasium's module:EnvId, SuperSuit wrappers before emulation, and eval rebuilding both from the run."""
    run_dir = tmp_path / "breakout"
    spec = "color_reduction_v0(mode='full'),resize_v1(84,84),frame_stack_v1(4)"
    code, payload, _ = run(capsys, "train", "ale_py:ALE/Breakout-v5", "--wrappers", spec, "--env-kwargs",
                           '{"max_episode_steps": 100}', "--total-steps", "64", "--run-dir", str(run_dir), "--json",
                           *FAST)
    assert code == 0 and payload["ok"], payload
    assert json.loads((run_dir / "config.json").read_text())["wrappers"] == spec
    video = tmp_path / "breakout.mp4"
    code, payload, _ = run(capsys, "eval", str(run_dir), "--episodes", "2", "--stochastic", "--video", str(video),
                           "--json")
    assert code == 0 and payload["episodes"] == 2 and payload["env"] == "ale_py:ALE/Breakout-v5"
    assert payload["mean_length"] <= 100 and payload["video"] == str(video)
    # the first reset, every step of both episodes, and the reset after each episode's end
    assert payload["frames"] == 1 + round(2 * payload["mean_length"]) + 2 and video.stat().st_size > 1000


def test_json_flag_prints_only_the_json_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["train", "bandit", "--total-steps", "64", "--run-dir", str(tmp_path / "b"), "--json", *FAST])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and json.loads(out[0])["ok"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "CartPol-v1"], "Did you mean 'CartPole-v1'"),
        (["train", "pettingzoo.butterfly.no_such_env_v1"], "unknown env"),
        (["train", "CartPole-v1", "--algo", "mappo", "--critic-input", "global"], "--critic-input"),
        (["train", "CartPole-v1", "--resume"], "--resume needs --run-dir"),
        (["train", "CartPole-v1", "--minibatch-size", "4096"], "minibatch_size"),
        (["train", "CartPole-v1", "--recurrent", "--minibatch-size", "8"], "whole segments"),
        (["train", "CartPole-v1", "--backend", "gpu"], "backend"),
        (["eval", "/nonexistent/run"], "does not exist"),
        (["plot", "/nonexistent/run"], "scalars.csv"),
        (["train", "CartPole-v1", "--no-such-flag"], "unrecognized arguments"),
        (["train", "CartPole-v1", "--wrappers", "resize_v2(8, 8)"], "unknown wrapper 'resize_v2'"),
    ],
)
def test_bad_input_gives_a_clear_error_and_a_json_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, argv: list[str],
    message: str
) -> None:
    monkeypatch.chdir(tmp_path)  # a run that gets as far as its default run directory makes it here
    code = main(argv)
    out = capsys.readouterr()
    payload = json.loads(out.out.strip().splitlines()[-1])
    assert code == 2 and payload["ok"] is False
    assert message in payload["error"] and message in out.err


def test_resume_with_changed_settings_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = str(tmp_path / "r")
    assert main(["train", "CartPole-v1", "--total-steps", "64", "--run-dir", run_dir, "--json", *FAST]) == 0
    capsys.readouterr()
    code, payload, _ = run(capsys, "train", "CartPole-v1", "--run-dir", run_dir, "--resume", "--gamma", "0.5")
    assert code == 2 and "gamma=0.99" in payload["error"]
    code, payload, _ = run(capsys, "train", "bandit", "--run-dir", run_dir, "--resume")
    assert code == 2 and "trains 'CartPole-v1'" in payload["error"]


def test_eval_refuses_a_checkpoint_of_another_policy_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    run_dir = tmp_path / "r"
    assert (
        main(["train", "CartPole-v1", "--total-steps", "64", "--run-dir", str(run_dir), "--json", *FAST]) == 0
    )
    capsys.readouterr()
    checkpoint = sorted((run_dir / "checkpoints").glob("*.pt"))[-1]
    payload = torch.load(checkpoint, weights_only=False)
    payload["env_signature"]["action_space"] = "Discrete(7)"
    torch.save(payload, checkpoint)
    code, result, _ = run(capsys, "eval", str(checkpoint))
    assert code == 2 and "another env" in result["error"]


def test_plot_without_matplotlib_names_the_extra(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = str(tmp_path / "r")
    assert main(["train", "bandit", "--total-steps", "64", "--run-dir", run_dir, "--json", *FAST]) == 0
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    code, payload, text = run(capsys, "plot", run_dir)
    assert code == 2 and 'plotting needs matplotlib: pip install "shoal[logging]"' in payload["error"]
    assert "Traceback" not in text


def test_list_shows_builtin_envs(capsys: pytest.CaptureFixture[str]) -> None:
    code, payload, text = run(capsys, "list")
    assert code == 0 and {"bandit", "memory", "nested"} <= set(payload["builtin"])
    assert "CartPole-v1" in payload["gymnasium"]
    assert "pettingzoo.butterfly.knights_archers_zombies_v11" in payload["pettingzoo"]
    assert "memory" in text


def test_python_dash_m_shoal(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shoal", "list", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["command"] == "list"


def test_a_raw_minigrid_env_named_on_the_command_line_trains_and_evaluates(tmp_path, capsys) -> None:
    # MiniGrid's MissionSpace is stored as text without the user registering it
    run_dir = str(tmp_path / "minigrid")
    assert main(["train", "minigrid:MiniGrid-Empty-5x5-v0", "--total-steps", "256", "--num-envs", "2",
                 "--run-dir", run_dir, "--json", *FAST]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["global_step"] >= 256
    assert main(["eval", run_dir, "--episodes", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["episodes"] == 2


def test_runs_started_in_the_same_second_get_their_own_default_run_dirs(tmp_path: Path) -> None:
    from shoal.cli import claim_run_dir

    base = tmp_path / "runs" / "CartPole-v1-s0-20261206-120000"
    claimed = [claim_run_dir(base) for _ in range(3)]
    assert claimed == [base, base.with_name(base.name + "-2"), base.with_name(base.name + "-3")]
    assert all(path.is_dir() for path in claimed)


def test_record_writes_a_minari_dataset_and_refuses_to_overwrite_it(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import minari

    out = tmp_path / "cartpole-random"
    code, payload, text = run(capsys, "record", "random", "--env", "CartPole-v1", "--steps", "200", "--seed", "2",
                              "--out", str(out))
    assert code == 0 and payload["ok"] and payload["command"] == "record"
    assert payload["steps"] == 200 and payload["path"] == str(out) and 10 < payload["mean_return"] < 40
    assert f"recorded {payload['episodes']} episodes, 200 steps" in text
    assert minari.MinariDataset(out / "data").total_steps == 200
    code, payload, text = run(capsys, "record", "random", "--env", "CartPole-v1", "--steps", "200", "--out", str(out))
    assert code == 2 and "already exists" in payload["error"] and "--overwrite" in payload["error"]
    code, payload, _ = run(capsys, "record", "random", "--steps", "20", "--out", str(tmp_path / "x"))
    assert code == 2 and "needs an env" in payload["error"]


def test_a_run_that_fails_to_start_leaves_no_default_run_dir(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", "CartPole-v1", "--env-kwargs", '{"bogus": 1}', "--json"]) == 2
    assert main(["train", "CartPole-v1", "--horizon", "0", "--json"]) == 2
    # refused by the trainer itself, after the run directory was claimed
    assert main(["train", "CartPole-v1", "--algo", "mappo", "--critic-input", "state", "--json"]) == 2
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir())


def test_train_bc_from_a_dataset_path_then_eval_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from shoal.datasets import save_dataset
    from tests.train.offline.recorded import cartpole_expert, record

    path = str(tmp_path / "cartpole-expert")
    save_dataset(record("CartPole-v1", cartpole_expert, 4), path)
    run_dir = str(tmp_path / "bc")
    common = ["--algo", "bc", "--dataset", path, "--run-dir", run_dir, "--hidden-size", "32", "--num-envs", "2",
              "--horizon", "100", "--no-tensorboard", "--no-dashboard"]
    code, payload, text = run(capsys, "train", "CartPole-v1", "--total-steps", "200", *common)
    assert code == 0 and payload["ok"] and payload["algo"] == "bc" and payload["global_step"] == 200, text
    assert f"dataset: 4 episodes, 2,000 steps, episode return 500.00 (min 500.00, max 500.00) from {path}" in text
    assert json.loads((tmp_path / "bc" / "config.json").read_text())["dataset"] == path
    code, payload, _ = run(capsys, "eval", run_dir, "--episodes", "2", "--json")
    assert code == 0 and payload["episodes"] == 2 and payload["mean_return"] > 100
    code, payload, _ = run(capsys, "train", "CartPole-v1", "--total-steps", "300", "--resume", *common)
    assert code == 0 and payload["global_step"] == 300 and payload["resumed_from"].endswith("update_000002.pt")
    code, payload, _ = run(capsys, "train", "Pendulum-v1", "--algo", "iql", "--dataset", path, "--run-dir",
                           str(tmp_path / "pendulum"))
    assert code == 2 and "but 'Pendulum-v1' observes Box" in payload["error"]
    code, payload, _ = run(capsys, "train", "CartPole-v1", "--algo", "bc", "--run-dir", str(tmp_path / "none"))
    assert code == 2 and "learns from a recorded dataset: give --dataset PATH" in payload["error"]
    code, payload, _ = run(capsys, "train", "CartPole-v1", "--algo", "bc", "--dataset", str(tmp_path / "missing"))
    assert code == 2 and "missing" in payload["error"]


def test_an_interrupted_record_writes_the_steps_recorded_so_far(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from shoal.datasets import load_dataset

    out = tmp_path / "partial"
    # the env raises KeyboardInterrupt at its 150th step, as Ctrl-C would
    code, payload, _ = run(capsys, "record", "random", "--env", "tests.faults.envs:interrupted_cartpole",
                           "--steps", "1000", "--out", str(out), "--json")
    assert code == 1 and not payload["ok"] and payload["signal"] == "SIGINT"
    assert payload["steps"] == 149 and payload["path"] == str(out)
    assert "interrupted after 149 of 1,000 steps" in payload["error"]
    dataset = load_dataset(out)
    assert dataset.num_steps == 149 and dataset.metadata["interrupted"] is True
    assert dataset.num_episodes == payload["episodes"] and dataset.truncations[-1]
