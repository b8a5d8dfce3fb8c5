"""Damaged, foreign and malicious checkpoints: they never run code from the file, unreadable ones are skipped for
the newest readable one, stale temporary files are removed, a crash while saving keeps the last good one, and a
checkpoint of another env or policy shape is refused naming the file and the difference."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from shoal.cli import main
from shoal.errors import CheckpointError
from shoal.train import TrainConfig, Trainer, train
from shoal.train.runs.checkpoint import (
    ENV_STATE_TAG,
    FORMAT,
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from shoal.train.runs.evaluate import load_policy_from_checkpoint

pytestmark = pytest.mark.usefixtures("no_leftovers")


@pytest.fixture(autouse=True)
def own_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test signs env snapshots with a key of its own (not the user's)."""
    home = tmp_path / "shoal-home"
    monkeypatch.setenv("SHOAL_HOME", str(home))
    return home


class RunsCode:
    """Unpickling this runs ``exec``: it writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def config(run_dir: Path, **overrides: Any) -> TrainConfig:
    base: dict[str, Any] = dict(
        env="CartPole-v1",
        total_steps=64 * 3,
        num_envs=4,
        horizon=16,
        minibatch_size=32,
        update_epochs=1,
        seed=5,
        run_dir=str(run_dir),
        checkpoint_interval=1,
        keep_checkpoints=5,
        log_interval=0.0,
        tensorboard=False,
    )
    base.update(overrides)
    return TrainConfig(**base)


def plant_code(path: Path, marker: Path) -> None:
    """Replace the checkpoint at ``path`` with a well-formed one whose model runs code when unpickled."""
    torch.save(
        {"format": FORMAT, "config": {}, "env_signature": {}, "policy_config": {}, "model": RunsCode(marker),
         "global_step": 0, "update": 99},
        path,
    )


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any], str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, json.loads(out.out.strip().splitlines()[-1]), out.err


# ------------------------------------------------------------------------------------------------------------
# No code runs from a checkpoint file
# ------------------------------------------------------------------------------------------------------------


def test_checkpoints_load_as_plain_data_and_keep_numpy_values(tmp_path: Path) -> None:
    train(config(tmp_path / "run", total_steps=64))
    path = list_checkpoints(tmp_path / "run")[-1]
    torch.load(path, weights_only=True)  # plain data only: no allow-listing needed
    payload = load_checkpoint(path)
    kind, state = payload["rng"]["numpy"][:2]
    assert kind == "MT19937" and isinstance(state, np.ndarray) and state.dtype == np.uint32 and state.shape == (624,)
    assert isinstance(payload["env_state"], bytes) and payload["env_state"].startswith(ENV_STATE_TAG)
    values = {"a": np.arange(6, dtype=np.float16).reshape(2, 3), "s": np.float64(1.5), "b": b"\x00\xff",
              "r": np.zeros((2, 0), np.int64), "t": (np.bool_(True), [np.array("xy")])}
    save_checkpoint(tmp_path / "x.pt", {**payload, "extra": values})
    back = load_checkpoint(tmp_path / "x.pt")["extra"]
    assert back["a"].dtype == np.float16 and np.array_equal(back["a"], values["a"])
    assert back["a"].flags.writeable and type(back["s"]) is np.float64 and back["s"] == 1.5
    assert back["b"] == b"\x00\xff" and back["r"].shape == (2, 0) and back["t"][1][0] == "xy"
    policy, _, _ = load_policy_from_checkpoint(path)
    assert payload["model"]._metadata == policy.state_dict()._metadata  # module versions survive


def test_a_checkpoint_of_format_1_is_refused_with_its_reason(tmp_path: Path) -> None:
    old = tmp_path / "update_000001.pt"
    torch.save({"format": 1, "rng": {"numpy": np.random.get_state()}}, old)  # numpy objects through pickle
    with pytest.raises(CheckpointError, match=r"stores numpy objects through pickle.*format 1"):
        load_checkpoint(old)
    # an array record that asks for Python object references is malformed, never built
    forged = tmp_path / "forged.pt"
    torch.save({"format": FORMAT, "model": {"__shoal_ndarray__": "|O", "shape": [1], "scalar": False,
                                            "data": torch.zeros(8, dtype=torch.uint8)}}, forged)
    with pytest.raises(CheckpointError, match="malformed data"):
        load_checkpoint(forged)


def test_saving_an_object_that_is_not_plain_data_names_its_field(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"payload\['trainer'\]\['thing'\].*RunsCode"):
        save_checkpoint(tmp_path / "x.pt", {"trainer": {"thing": RunsCode(tmp_path / "m")}})
    with pytest.raises(CheckpointError, match="objects"):
        save_checkpoint(tmp_path / "x.pt", {"a": np.array([object()])})
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob(".*.tmp"))


def test_a_checkpoint_that_would_run_code_is_refused_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    plant_code(evil, marker)
    with pytest.raises(CheckpointError, match=r"refused to load .*evil\.pt: it holds an object that is not plain data"):
        load_checkpoint(evil)
    code, payload, err = cli(capsys, "eval", str(evil), "--episodes", "1")
    assert code == 2 and not payload["ok"] and "refused to load" in payload["error"] and "evil.pt" in err

    # --resume of a run whose only checkpoint runs code
    run_dir = tmp_path / "run"
    train(config(run_dir, total_steps=64))
    (only,) = list_checkpoints(run_dir)
    plant_code(only, marker)
    with pytest.raises(CheckpointError, match=r"(?s)no readable checkpoint.*refused to load .*update_000001\.pt"):
        train(config(run_dir, resume=True))
    code, payload, _ = cli(capsys, "train", "CartPole-v1", "--run-dir", str(run_dir), "--resume", "--json")
    assert code == 2 and "refused to load" in payload["error"]
    code, payload, _ = cli(capsys, "eval", str(run_dir), "--json")
    assert code == 2 and "refused to load" in payload["error"]
    assert not marker.exists()


def test_an_env_name_in_a_checkpoint_is_never_imported_and_called(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # plain data can still name code: an entry point with keyword arguments that eval would call to make the env
    run_dir = tmp_path / "run"
    train(config(run_dir, total_steps=64))
    (path,) = list_checkpoints(run_dir)
    marker = tmp_path / "code-ran"
    payload = load_checkpoint(path)
    payload["config"] = {**payload["config"], "env": "subprocess:getoutput",
                         "env_kwargs": {"cmd": f"touch {marker}"}}
    save_checkpoint(path, payload)
    code, result, _ = cli(capsys, "eval", str(run_dir), "--episodes", "1", "--json")
    assert code == 2 and not result["ok"] and "'subprocess:getoutput'" in result["error"]
    assert "it is not used" in result["error"] and "--env" in result["error"] and str(path) in result["error"]
    assert not marker.exists()
    for name in ("os.path", "pettingzoo.utils"):  # modules other than env modules are not imported either
        payload["config"] = {**payload["config"], "env": name, "env_kwargs": {}}
        save_checkpoint(path, payload)
        code, result, _ = cli(capsys, "eval", str(run_dir), "--episodes", "1", "--json")
        assert code == 2 and "it is not used" in result["error"], result
    # the user may still name an env in full knowledge: --env is taken as given
    payload["config"] = {**payload["config"], "env": "CartPole-v1"}
    save_checkpoint(path, payload)
    code, result, _ = cli(capsys, "eval", str(run_dir), "--episodes", "1", "--env", "CartPole-v1", "--json")
    assert code == 0 and result["ok"]


def test_a_league_snapshot_that_would_run_code_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "code-ran"
    run_dir = tmp_path / "league"
    cfg = config(run_dir, env="pettingzoo.classic.tictactoe_v3", league=True, total_steps=64 * 2,
                 league_snapshot_interval=1)
    train(cfg)
    snapshots = sorted((run_dir / "league").glob("*.pt"))
    assert snapshots
    for path in snapshots:
        plant_code(path, marker)
    with pytest.raises(CheckpointError, match="refused to load"):
        train(cfg.replace(resume=True, total_steps=64 * 3))
    code, payload, _ = cli(capsys, "eval", str(run_dir), "--opponent", str(snapshots[0]), "--episodes", "2")
    assert code == 2 and "refused to load" in payload["error"]
    assert not marker.exists()


def test_an_env_snapshot_is_unpickled_only_with_a_valid_signature(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, own_key: Path
) -> None:
    marker = tmp_path / "code-ran"
    run_dir = tmp_path / "run"
    train(config(run_dir, total_steps=64 * 2))
    path = list_checkpoints(run_dir)[-1]
    payload = load_checkpoint(path)
    good = payload["env_state"]
    mac = good[len(ENV_STATE_TAG): len(ENV_STATE_TAG) + 32]
    import pickle

    # a tampered snapshot: the code of RunsCode behind the original signature
    payload["env_state"] = ENV_STATE_TAG + mac + pickle.dumps(RunsCode(marker))
    save_checkpoint(path, payload)
    with caplog.at_level(logging.WARNING):
        resumed = train(config(run_dir, resume=True, total_steps=64 * 3))
    assert not marker.exists() and resumed.resumed_from == path and not resumed.exact_resume
    assert "not signed with this user's key" in caplog.text

    # a snapshot signed under another key (another user or machine) is not trusted either
    caplog.clear()
    train(config(tmp_path / "other", total_steps=64 * 2))
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "another-home"))
    with caplog.at_level(logging.WARNING):
        resumed = train(config(tmp_path / "other", resume=True, total_steps=64 * 3))
    assert not resumed.exact_resume and "not signed" in caplog.text
    # ... and is once the key is there
    monkeypatch.setenv("SHOAL_HOME", str(own_key))
    train(config(tmp_path / "third", total_steps=64 * 2))
    assert train(config(tmp_path / "third", resume=True, total_steps=64 * 3)).exact_resume


@pytest.mark.skipif(os.name != "posix", reason="file modes")
def test_the_signing_key_is_private_and_a_shared_one_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, own_key: Path
) -> None:
    from shoal.train.runs.checkpoint import checkpoint_key_path

    train(config(tmp_path / "run", total_steps=64))
    key = checkpoint_key_path()
    assert key.parent == own_key and key.stat().st_mode & 0o777 == 0o600 and len(key.read_bytes()) == 32
    other_home = tmp_path / "loose"
    other_home.mkdir()
    (other_home / "checkpoint.key").write_bytes(os.urandom(32))
    (other_home / "checkpoint.key").chmod(0o644)
    os.environ["SHOAL_HOME"] = str(other_home)  # restored by the own_key fixture's monkeypatch
    with caplog.at_level(logging.WARNING):
        train(config(tmp_path / "loose-run", total_steps=64))
    assert "chmod 600" in caplog.text
    assert load_checkpoint(list_checkpoints(tmp_path / "loose-run")[-1])["env_state"] is None


# ------------------------------------------------------------------------------------------------------------
# Unreadable checkpoints and stale temporary files
# ------------------------------------------------------------------------------------------------------------


def test_a_truncated_newest_checkpoint_falls_back_to_the_previous_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    train(config(run_dir))
    *_, previous, newest = list_checkpoints(run_dir)
    newest.write_bytes(newest.read_bytes()[:5000])  # cut short, e.g. by a full disk during a copy
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(newest)
    with caplog.at_level(logging.WARNING):
        assert find_checkpoint(run_dir) == previous
    assert "update_000003.pt" in caplog.text and "truncated" in caplog.text

    code, payload, _ = cli(capsys, "eval", str(run_dir), "--episodes", "2", "--json")
    assert code == 0 and payload["checkpoint"] == str(previous)
    resumed = train(config(run_dir, resume=True, total_steps=64 * 4))
    assert resumed.resumed_from == previous and resumed.global_step == 64 * 4 and resumed.exact_resume


def test_no_readable_checkpoint_names_each_file_and_cause(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(config(run_dir, total_steps=64 * 2))
    first, second = list_checkpoints(run_dir)
    first.write_bytes(b"")
    data = bytearray(second.read_bytes())
    at = data.index(b"data.pkl") + 100  # flip a byte inside a stored member: its CRC no longer matches
    data[at] ^= 0xFF
    second.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as info:
        find_checkpoint(run_dir)
    text = str(info.value)
    assert "no readable checkpoint" in text and "update_000001.pt" in text and "update_000002.pt" in text
    assert "truncated" in text and ("corrupted" in text or "cannot read" in text)
    with pytest.raises(CheckpointError, match="update_000001"):
        Trainer(config(run_dir, resume=True))


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_stale_temporary_files_are_removed_on_save_resume_and_overwrite(tmp_path: Path) -> None:
    from shoal.train.runs.checkpoint import remove_stale_temporaries

    run_dir = tmp_path / "run"
    train(config(run_dir, total_steps=64))
    folder = run_dir / "checkpoints"

    def plant() -> tuple[Path, Path, Path]:
        dead = folder / f".update_000007.pt.{_dead_pid()}.tmp"
        old = folder / f".update_000008.pt.{os.getppid()}.tmp"  # a live pid, but hours old
        live = folder / f".update_000009.pt.{os.getppid()}.tmp"  # being written right now, maybe
        for path in (dead, old, live):
            path.write_bytes(b"partial")
        os.utime(old, (time.time() - 5 * 3600,) * 2)
        return dead, old, live

    dead, old, live = plant()
    assert set(remove_stale_temporaries(run_dir)) == {dead, old} and live.exists()
    live.unlink()

    dead, old, live = plant()
    save_checkpoint(folder / "update_000005.pt", {"format": FORMAT})  # the next save
    assert not dead.exists() and not old.exists() and live.exists()
    (folder / "update_000005.pt").unlink()

    for flags in ({"resume": True, "total_steps": 64 * 2}, {"overwrite": True}):
        live.unlink(missing_ok=True)
        dead, old, live = plant()
        trainer = Trainer(config(run_dir, **flags))
        try:
            trainer._open_run_dir()
        finally:
            trainer.close()
        assert not dead.exists() and not old.exists() and live.exists()


# ------------------------------------------------------------------------------------------------------------
# A crash while saving; another run's checkpoint
# ------------------------------------------------------------------------------------------------------------


def test_a_crash_while_saving_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = train(config(tmp_path / "run", total_steps=64 * 2))
    good = list_checkpoints(tmp_path / "run")[-1]
    before = good.read_bytes()

    def exploding_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(good, {"anything": 1})
    monkeypatch.undo()
    assert good.read_bytes() == before
    assert not list((tmp_path / "run" / "checkpoints").glob("*.tmp"))
    assert load_checkpoint(good)["update"] == result.updates


def test_resume_refuses_another_env_or_policy_shape(tmp_path: Path) -> None:
    train(config(tmp_path / "run", total_steps=64))
    (path,) = list_checkpoints(tmp_path / "run")
    with pytest.raises(CheckpointError, match="another env") as info:
        Trainer(config(tmp_path / "run", env="bandit", resume=True)).train()
    assert str(path) in str(info.value)
    with pytest.raises(CheckpointError, match="hidden_size") as info:
        Trainer(config(tmp_path / "run", hidden_size=32, resume=True)).train()
    assert str(path) in str(info.value)
    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": 1}, bogus)
    with pytest.raises(CheckpointError, match=r"bogus\.pt.*not a shoal training checkpoint|not a shoal training "
                       r"checkpoint.*bogus\.pt"):
        load_checkpoint(bogus)
