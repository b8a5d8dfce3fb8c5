"""Weights & Biases mode: configured, else WANDB_MODE, else offline; what shoal asks wandb.init for.

wandb itself is not a dependency: a stand-in module records the calls shoal makes to it.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from shoal.cli import main
from shoal.train.runs.logger import wandb_mode


def test_the_mode_is_the_configured_one_else_wandb_mode_else_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert wandb_mode(None) == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert wandb_mode(None) == "online" and wandb_mode("disabled") == "disabled"


@pytest.fixture
def recorded_wandb(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    class Run:
        def log(self, scalars: dict[str, float], step: int) -> None:
            calls.append({"log": step})

        def finish(self) -> None:
            calls.append({"finish": True})

    def init(**kwargs: Any) -> Run:
        calls.append(kwargs)
        return Run()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    return calls


@pytest.mark.parametrize(("flag", "env", "expected"), [([], None, "offline"), ([], "online", "online"),
                                                       (["--wandb-mode", "disabled"], "online", "disabled")])
def test_shoal_train_passes_the_mode_to_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str], recorded_wandb: list[dict[str, Any]],
                                             flag: list[str], env: str | None, expected: str) -> None:
    if env is None:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_MODE", env)
    code = main(["train", "bandit", "--total-steps", "64", "--num-envs", "2", "--horizon", "16", "--minibatch-size",
                 "16", "--no-tensorboard", "--wandb", *flag, "--run-dir", str(tmp_path / "r"), "--json"])
    assert code == 0, capsys.readouterr()
    init = recorded_wandb[0]
    assert init["mode"] == expected and init["dir"] == str(tmp_path / "r") and init["project"] == "shoal"
    assert any("log" in call for call in recorded_wandb) and recorded_wandb[-1] == {"finish": True}
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["wandb_mode"] == (None if not flag else "disabled")
