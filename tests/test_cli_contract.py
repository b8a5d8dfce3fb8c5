"""The command line's contract under failure: a JSON line and a documented exit status for every failure;
optional TensorBoard; bounded evaluation that cannot fail a finished training; evaluation on another env."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from shoal.cli import main
from shoal.errors import APIUsageError, EpisodeLimitError
from shoal.train.runs.resolve import resolve_env

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--num-envs", "2", "--horizon", "16", "--minibatch-size", "32", "--update-epochs", "1"]
EVALUATE = sys.modules["shoal.train.runs.evaluate"]  # (shoal.train.runs.evaluate is also the name of the function)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any], str, list[str]]:
    """Exit status, the last JSON line, stderr, and every stdout line."""
    code = main(list(argv))
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    return code, json.loads(lines[-1]), out.err, lines


# ------------------------------------------------------------------------------------------------------------
# Exit statuses
# ------------------------------------------------------------------------------------------------------------


def test_an_unexpected_exception_ends_with_a_json_line_status_3_and_the_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("something nobody expected")

    monkeypatch.setattr(EVALUATE, "evaluate_checkpoint", broken)
    code, payload, err, lines = run(capsys, "eval", str(tmp_path), "--json")
    assert code == 3 and len(lines) == 1
    assert payload == {"command": "eval", "ok": False, "error": "ValueError: something nobody expected",
                       "error_type": "ValueError"}
    assert "Traceback (most recent call last)" in err and "in broken" in err
    assert "shoal: error: ValueError: something nobody expected" in err


def test_an_interrupt_outside_training_is_status_1_with_a_json_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(EVALUATE, "evaluate_checkpoint", interrupted)
    code, payload, _, _ = run(capsys, "eval", str(tmp_path))
    assert code == 1 and payload["ok"] is False and payload["error"] == "interrupted"


def test_bad_env_kwargs_name_the_flag_in_the_json_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, payload, err, lines = run(capsys, "train", "CartPole-v1", "--env-kwargs", '{"max_episode_steps": "abc"}',
                                    "--run-dir", str(tmp_path / "r"), "--json")
    assert code == 2 and len(lines) == 1 and payload["ok"] is False
    assert "--env-kwargs" in payload["error"] and "max_episode_steps" in payload["error"]
    assert "TypeError" in err  # the env's own traceback stays visible


def test_python_dash_m_shoal_reports_a_failure_on_stdout(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shoal", "train", "CartPole-v1", "--env-kwargs", '{"max_episode_steps": "abc"}',
         "--run-dir", str(tmp_path / "r"), "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2
    (line,) = done.stdout.strip().splitlines()
    assert json.loads(line)["ok"] is False and "shoal: error:" in done.stderr


def test_help_documents_the_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["train", "--help"], ["eval", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        text = " ".join(capsys.readouterr().out.split())
        assert "3 unexpected error" in text and "2 bad input" in text
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "never unpickled" in text and "checkpoint.key" in text


# ------------------------------------------------------------------------------------------------------------
# TensorBoard is optional
# ------------------------------------------------------------------------------------------------------------


def test_training_without_tensorboard_warns_once_and_keeps_the_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    run_dir = tmp_path / "r"
    with caplog.at_level(logging.WARNING):
        code, payload, _, _ = run(capsys, "train", "CartPole-v1", "--total-steps", "64", "--run-dir", str(run_dir),
                                  "--json", *FAST)
    assert code == 0 and payload["ok"]
    warnings = [r.getMessage() for r in caplog.records if "TensorBoard" in r.getMessage()]
    assert len(warnings) == 1 and 'pip install "shoal[logging]"' in warnings[0]
    assert (run_dir / "scalars.csv").stat().st_size > 0 and not (run_dir / "tensorboard").exists()


# ------------------------------------------------------------------------------------------------------------
# Evaluation is bounded, and cannot fail a finished training
# ------------------------------------------------------------------------------------------------------------


class AlwaysUp(nn.Module):
    """A deterministic CliffWalking policy that walks into the top wall forever (action 0 is up)."""

    is_recurrent = False

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, obs: torch.Tensor, state: Any = None, **kwargs: Any) -> Any:
        zeros = torch.zeros(obs.shape[0])
        return SimpleNamespace(action=zeros.long(), log_prob=zeros, value=zeros, state=None)


def test_evaluation_stops_at_its_step_bound_and_says_how_to_end_episodes() -> None:
    env_fn = resolve_env("CliffWalking-v1")
    with pytest.raises(EpisodeLimitError, match=r"200 steps per env.*--stochastic.*max_episode_steps"):
        EVALUATE.evaluate(AlwaysUp(), env_fn, 2, max_steps=200)
    with pytest.raises(APIUsageError, match="max_steps must be a positive int"):
        EVALUATE.evaluate(AlwaysUp(), env_fn, 2, max_steps=0)


def test_a_failed_evaluation_after_training_keeps_ok_and_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(EVALUATE, "DEFAULT_MAX_STEPS", 200)  # a tiny budget: CliffWalking has no time limit
    run_dir = tmp_path / "cliff"
    with caplog.at_level(logging.WARNING):
        code, payload, _, lines = run(capsys, "train", "CliffWalking-v1", "--total-steps", "64", "--seed", "0",
                                      "--eval-episodes", "2", "--run-dir", str(run_dir), "--no-tensorboard", *FAST)
    assert code == 0 and payload["ok"] is True
    assert payload["global_step"] == 64 and Path(payload["checkpoint"]).is_file()
    assert "no episode finished within 200 steps" in payload["evaluation"]["error"]
    assert payload["eval_mean_return"] is None
    assert any("trained 64 steps" in line for line in lines) and any("evaluation failed" in line for line in lines)
    assert "evaluation after training failed" in caplog.text

    # shoal eval: the same bound is a plain error (status 2) with the hint; --stochastic finishes episodes
    code, payload, _, _ = run(capsys, "eval", str(run_dir), "--episodes", "1", "--max-steps", "200", "--json")
    assert code == 2 and "--stochastic" in payload["error"]
    code, payload, _, _ = run(capsys, "eval", str(run_dir), "--episodes", "1", "--stochastic", "--max-steps",
                              "100000", "--json")
    assert code == 0 and payload["episodes"] == 1


# ------------------------------------------------------------------------------------------------------------
# shoal eval --env: another env is refused unless its spaces match, and then named in a warning
# ------------------------------------------------------------------------------------------------------------


def test_eval_on_another_env(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             caplog: pytest.LogCaptureFixture) -> None:
    run_dir = tmp_path / "cartpole"
    assert main(["train", "CartPole-v1", "--total-steps", "64", "--run-dir", str(run_dir), "--json",
                 "--no-tensorboard", *FAST]) == 0
    capsys.readouterr()
    code, payload, _, _ = run(capsys, "eval", str(run_dir), "--env", "Acrobot-v1", "--json")
    assert code == 2 and "another env" in payload["error"] and "'Acrobot-v1'" in payload["error"]

    with caplog.at_level(logging.WARNING):
        code, payload, _, _ = run(capsys, "eval", str(run_dir), "--env", "CartPole-v0", "--episodes", "2", "--json")
    assert code == 0 and payload["env"] == "CartPole-v0" and payload["trained_env"] == "CartPole-v1"
    assert "trained on 'CartPole-v1', not 'CartPole-v0'" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        code, payload, _, _ = run(capsys, "eval", str(run_dir), "--env-kwargs", '{"max_episode_steps": 20}',
                                  "--episodes", "2", "--json")
    assert code == 0 and payload["env"] == "CartPole-v1" and payload["mean_length"] <= 20
    assert "trained on" not in caplog.text

    code, payload, _, _ = run(capsys, "eval", str(run_dir), "--env", "CartPole-v0", "--opponent", "random")
    assert code == 2 and "--opponent" in payload["error"]


def test_returns_of_an_evaluation_cut_short_cover_the_finished_episodes_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from shoal.policies import Policy
    from shoal.vector import make

    torch.manual_seed(0)
    env_fn = resolve_env("CartPole-v1")
    vec = make(env_fn, 1, backend="serial")
    try:
        policy = Policy.from_env(vec, hidden_size=8)
    finally:
        vec.close()
    with caplog.at_level(logging.WARNING):
        result = EVALUATE.evaluate(policy, env_fn, 50, num_envs=1, max_steps=60)
    assert 1 <= result["episodes"] < 50 and np.isfinite(result["mean_return"])
    assert "evaluation stopped after 60 steps per env" in caplog.text
