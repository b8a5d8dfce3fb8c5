"""Stopping a training run from outside: Ctrl-C and SIGTERM save the last completed update and exit with status 1
and a JSON line naming the checkpoint; SIGKILL, even in the middle of a checkpoint write, leaves the newest
complete checkpoint to resume from; no process outlives the run.

The command-line cases run ``python -m shoal train`` in a subprocess and signal it from here (real signals, real
timing); the cases about where a signal lands (during an update, during a rollout, twice) drive
:class:`~shoal.train.Trainer` in this process, whose main thread receives the signals it sends itself.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.cli import main
from shoal.interrupts import Terminated, deferred_signals, terminate_as_interrupt
from shoal.train import TrainConfig, Trainer
from shoal.train.runs.checkpoint import checkpoint_path, find_checkpoint, list_checkpoints, load_checkpoint
from tests.faults.conftest import REPORT_S, ROOT
from tests.vector.procs import shm_files, shm_of, wait_gone

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("no_leftovers")]

#: One update is 2 envs x 16 steps = 32 agent steps: updates land every few milliseconds.
SMALL = ["--num-envs", "2", "--horizon", "16", "--minibatch-size", "32", "--update-epochs", "1", "--no-tensorboard",
         "--eval-episodes", "0", "--log-interval", "0"]

#: Runs the command line with ``torch.save`` slowed down from its ``SLOW_FROM``-th call on: half the file is
#: written, a marker file appears, and the rest follows ``SLEEP`` seconds later (a kill lands mid-write).
_SLOW_WRITES = """
import io, os, sys, time
import torch
from shoal.cli import main

real_save, calls = torch.save, [0]

def slow_save(obj, f, *args, **kwargs):
    calls[0] += 1
    if calls[0] < {slow_from}:
        return real_save(obj, f, *args, **kwargs)
    buffer = io.BytesIO()
    real_save(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()
    f.write(data[: len(data) // 2])
    f.flush()
    open({marker!r}, "w").close()
    time.sleep({sleep})
    f.write(data[len(data) // 2:])

torch.save = slow_save
sys.exit(main(sys.argv[1:]))
"""


# ------------------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------------------


def children_of(pid: int) -> set[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == str(pid):
                        out.add(int(entry))
            except (OSError, IndexError):
                continue
    return out


class Run:
    """``shoal train CartPole-v1 --run-dir RUN_DIR ...`` in a subprocess (its own session, so that a leftover
    can be killed with the whole group)."""

    def __init__(self, run_dir: Path, *argv: str, script: str | None = None) -> None:
        self.run_dir = run_dir
        command = ["-c", script, "train"] if script is not None else ["-m", "shoal", "train"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, *command, "CartPole-v1", "--run-dir", str(run_dir), "--json", *SMALL, *argv],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.pid = self.proc.pid

    def wait_for(self, ready: Any, what: str, seconds: float = 90.0) -> None:
        """Poll ``ready()`` until true (the run fails the test if it ends first)."""
        deadline = time.monotonic() + seconds
        while not ready():
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                pytest.fail(f"the run ended (status {self.proc.returncode}) before {what}:\n{out}\n{err[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {seconds} s")
            time.sleep(0.05)

    def first_update_logged(self) -> bool:
        csv = self.run_dir / "scalars.csv"
        return csv.exists() and "charts/update" in csv.read_text()

    def signal(self, signum: int) -> tuple[int, str, str, float]:
        """Send ``signum``; wait for the end. Returns the exit status, stdout, stderr and the seconds it took."""
        start = time.monotonic()
        os.kill(self.pid, signum)
        out, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, out, err, time.monotonic() - start

    def kill_all(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
            self.proc.communicate()


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    """Runs started by a test; any still going at its end are killed with their process group."""
    started: list[Run] = []
    yield started
    for run in started:
        run.kill_all()


def json_line(out: str) -> dict[str, Any]:
    lines = out.strip().splitlines()
    assert len(lines) == 1, f"--json must print exactly one line, got {lines}"
    return json.loads(lines[0])


def resume(run_dir: Path, capsys: pytest.CaptureFixture[str], more_steps: int = 64) -> dict[str, Any]:
    """``shoal train --resume`` (in this process) for ``more_steps`` more agent steps; its JSON line."""
    capsys.readouterr()
    step = load_checkpoint(find_checkpoint(run_dir))["global_step"]
    code = main(["train", "CartPole-v1", "--run-dir", str(run_dir), "--resume", "--json",
                 "--total-steps", str(step + more_steps), "--eval-episodes", "0"])
    payload = json_line(capsys.readouterr().out)
    assert code == 0 and payload["ok"], payload
    assert payload["global_step"] == step + more_steps
    return payload


def assert_interrupted(run_dir: Path, code: int, out: str, err: str, seconds: float, name: str) -> Path:
    """Status 1 within the bound, one JSON line naming the signal and a complete checkpoint of the last update."""
    assert seconds < REPORT_S, f"{name} took {seconds:.1f} s to stop the run"
    assert code == 1, f"status {code}\n{err[-3000:]}"
    payload = json_line(out)
    assert payload["ok"] is False and payload["command"] == "train" and payload["signal"] == name
    checkpoint = Path(payload["checkpoint"])
    assert checkpoint.parent == run_dir / "checkpoints" and checkpoint.name in payload["error"]
    assert f"shoal: error: {payload['error']}" in err
    saved = load_checkpoint(checkpoint)  # complete and readable
    assert saved["global_step"] == payload["global_step"] > 0
    assert checkpoint == checkpoint_path(run_dir, saved["update"]) == list_checkpoints(run_dir)[-1]
    assert not list((run_dir / "checkpoints").glob("*.tmp"))
    return checkpoint


# ------------------------------------------------------------------------------------------------------------
# The command line, signalled from outside
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum, backend", [(signal.SIGINT, "serial"), (signal.SIGTERM, "multiprocessing")],
                         ids=["SIGINT-serial", "SIGTERM-multiprocessing"])
def test_a_signal_saves_the_last_update_and_resume_continues_from_it(
    tmp_path: Path, runs: list[Run], capsys: pytest.CaptureFixture[str], signum: int, backend: str
) -> None:
    run_dir = tmp_path / "run"
    run = Run(run_dir, "--checkpoint-interval", "1000", "--total-steps", "10000000", "--backend", backend,
              "--num-workers", "2")
    runs.append(run)
    run.wait_for(run.first_update_logged, "first update")
    workers = children_of(run.pid)
    assert len(workers) == (2 if backend == "multiprocessing" else 0)
    code, out, err, seconds = run.signal(signum)
    checkpoint = assert_interrupted(run_dir, code, out, err, seconds, signal.Signals(signum).name)
    assert not wait_gone(workers), "env workers outlived the run"
    assert not shm_of({run.pid, *workers}, shm_files())
    # the rollout under way is not saved: the envs restart from a fresh reset
    saved = load_checkpoint(checkpoint)
    assert saved["trainer"]["carry"] is None and saved["env_state"] is None
    payload = resume(run_dir, capsys)
    assert payload["resumed_from"] == str(checkpoint)


def test_sigkill_while_a_checkpoint_is_written_leaves_the_previous_one_to_resume_from(
    tmp_path: Path, runs: list[Run], capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL cannot be caught: the third checkpoint is half written when it lands. The first two are whole,
    the workers go away on their own, and resume uses the second and removes the half-written file."""
    run_dir, marker = tmp_path / "run", tmp_path / "writing"
    script = _SLOW_WRITES.format(slow_from=3, sleep=60, marker=str(marker))
    run = Run(run_dir, "--checkpoint-interval", "1", "--total-steps", "10000000", "--backend", "multiprocessing",
              "--num-workers", "2", script=script)
    runs.append(run)
    run.wait_for(marker.exists, "checkpoint write under way")
    workers = children_of(run.pid)
    assert len(workers) == 2
    code, _, _, _ = run.signal(signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert not wait_gone(workers), "env workers outlived the killed trainer"
    assert not shm_of({run.pid, *workers}, shm_files())
    folder = run_dir / "checkpoints"
    (partial,) = folder.glob(f".update_000003.pt.{run.pid}.tmp")
    assert [p.name for p in list_checkpoints(run_dir)] == ["update_000001.pt", "update_000002.pt"]
    newest = find_checkpoint(run_dir)
    assert newest.name == "update_000002.pt"
    payload = resume(run_dir, capsys)
    assert payload["resumed_from"] == str(newest) and not partial.exists()


def test_sigterm_during_a_checkpoint_write_lets_the_write_finish(
    tmp_path: Path, runs: list[Run]
) -> None:
    """The update and its checkpoint are one step: SIGTERM in the middle of the write takes effect after it."""
    run_dir, marker = tmp_path / "run", tmp_path / "writing"
    script = _SLOW_WRITES.format(slow_from=2, sleep=1.0, marker=str(marker))
    run = Run(run_dir, "--checkpoint-interval", "1", "--total-steps", "10000000", script=script)
    runs.append(run)
    run.wait_for(marker.exists, "checkpoint write under way")
    code, out, err, seconds = run.signal(signal.SIGTERM)
    checkpoint = assert_interrupted(run_dir, code, out, err, seconds, "SIGTERM")
    assert checkpoint.name == "update_000002.pt"  # the one being written when the signal came, and no later one


# ------------------------------------------------------------------------------------------------------------
# Where the signal lands (in this process)
# ------------------------------------------------------------------------------------------------------------


def config(run_dir: Path, **overrides: Any) -> TrainConfig:
    base: dict[str, Any] = dict(env="CartPole-v1", total_steps=10_000_000, num_envs=2, horizon=16, minibatch_size=32,
                                update_epochs=1, seed=3, run_dir=str(run_dir), checkpoint_interval=1000,
                                log_interval=0.0, tensorboard=False, eval_episodes=0)
    base.update(overrides)
    return TrainConfig(**base)


def signal_in_update(monkeypatch: pytest.MonkeyPatch, at: int, signums: list[int]) -> None:
    """Send ``signums`` to this process at the start of update ``at`` (inside ``Trainer.learn``)."""
    learn = Trainer.learn

    def learn_with_signal(self: Trainer) -> dict[str, float]:
        if self.update + 1 == at:
            for signum in signums:
                os.kill(os.getpid(), signum)
        return learn(self)

    monkeypatch.setattr(Trainer, "learn", learn_with_signal)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_an_update_takes_effect_once_it_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signum: int
) -> None:
    signal_in_update(monkeypatch, at=3, signums=[signum])
    trainer = Trainer(config(tmp_path / "run"))
    with terminate_as_interrupt(), pytest.raises(KeyboardInterrupt) as info:
        trainer.train()
    assert isinstance(info.value, Terminated) == (signum == signal.SIGTERM)
    assert trainer.update == 3 and trainer.last_checkpoint == checkpoint_path(tmp_path / "run", 3)
    assert load_checkpoint(trainer.last_checkpoint)["global_step"] == 3 * 32
    assert trainer.vecenv.closed


def test_a_second_ctrl_c_stops_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C twice: the update under way is dropped; the last completed one is still saved."""
    signal_in_update(monkeypatch, at=3, signums=[signal.SIGINT, signal.SIGINT])
    trainer = Trainer(config(tmp_path / "run"))
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert trainer.update == 2 and trainer.last_checkpoint == checkpoint_path(tmp_path / "run", 2)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


@pytest.mark.parametrize("overrides", [{}, {"async_learner": True}], ids=["ppo", "async-learner"])
def test_ctrl_c_during_a_rollout_saves_the_last_update_and_resume_restarts_the_envs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, overrides: dict[str, Any]
) -> None:
    recv, calls = Trainer._recv, [0]

    def recv_interrupted(self: Trainer) -> Any:
        calls[0] += 1
        if calls[0] == 16 * 3 + 5:  # a few steps into the fourth rollout
            raise KeyboardInterrupt
        return recv(self)

    monkeypatch.setattr(Trainer, "_recv", recv_interrupted)
    run_dir = tmp_path / "run"
    trainer = Trainer(config(run_dir, **overrides))
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    monkeypatch.undo()
    saved = load_checkpoint(trainer.last_checkpoint)
    assert trainer.last_checkpoint == checkpoint_path(run_dir, saved["update"]) and saved["update"] >= 2
    assert saved["global_step"] == saved["update"] * 32 and saved["trainer"]["carry"] is None
    with caplog.at_level(logging.WARNING):
        result = Trainer(config(run_dir, resume=True, total_steps=saved["global_step"] + 64, **overrides)).train()
    assert result.resumed_from == trainer.last_checkpoint and not result.exact_resume
    assert result.global_step == saved["global_step"] + 64 and "fresh reset" in caplog.text


def test_an_interrupt_before_the_first_update_saves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    signal_in_update(monkeypatch, at=1, signums=[signal.SIGINT, signal.SIGINT])
    code = main(["train", "CartPole-v1", "--run-dir", str(tmp_path / "run"), "--json", *SMALL])
    payload = json_line(capsys.readouterr().out)
    assert code == 1 and payload["checkpoint"] is None and payload["signal"] == "SIGINT"
    assert "the last checkpoint is None" in payload["error"] and not list_checkpoints(tmp_path / "run")


def test_deferred_signals_deliver_to_the_previous_handler_once_the_block_ends() -> None:
    seen: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    try:
        with deferred_signals((signal.SIGUSR1,)):
            os.kill(os.getpid(), signal.SIGUSR1)
            time.sleep(0.01)
            assert seen == []  # held
        assert seen == [signal.SIGUSR1]
        ignored = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        with deferred_signals((signal.SIGUSR1,)):
            assert signal.getsignal(signal.SIGUSR1) is signal.SIG_IGN  # an ignored signal stays ignored
        signal.signal(signal.SIGUSR1, ignored)
    finally:
        signal.signal(signal.SIGUSR1, previous)
