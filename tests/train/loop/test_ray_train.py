"""``shoal train --backend ray`` on a local Ray cluster: env actors on Ray, the learner in the calling process."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.cli import main
from shoal.vector.ray import connect_ray

ray = pytest.importorskip("ray")

# one worker runs every Ray module (--dist loadgroup): two clusters at once on two cores crowd their timing bounds
pytestmark = [pytest.mark.timeout(120), pytest.mark.xdist_group("ray")]

ROOT = Path(__file__).resolve().parents[3]
FAST = ["--num-envs", "4", "--num-workers", "2", "--horizon", "16", "--minibatch-size", "32", "--update-epochs", "2",
        "--total-steps", "192", "--no-tensorboard", "--no-dashboard", "--json"]


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A local Ray cluster of 2 CPUs for this module; yields its address."""
    if ray.is_initialized():
        ray.shutdown()
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                       runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield context.address_info["gcs_address"]
    ray.shutdown()


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_shoal_train_runs_its_envs_on_ray_actors(ray_address: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    code = main(["train", "CartPole-v1", "--backend", "ray", "--run-dir", str(run_dir), *FAST])
    payload = _last_json(capsys.readouterr().out)
    assert code == 0 and payload["ok"], payload
    assert payload["updates"] == 3 and payload["global_step"] == 192
    assert json.loads((run_dir / "config.json").read_text())["backend"] == "ray"
    assert payload["checkpoint"] is not None and Path(payload["checkpoint"]).is_file()


def test_shoal_train_with_ray_address_joins_the_cluster(ray_address: str, tmp_path: Path) -> None:
    """The command line in its own process connects to the running cluster (ray.init(address=...)); the
    actors get this checkout's shoal shipped to them (py_modules)."""
    run_dir = tmp_path / "run"
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_ADDRESS")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-m", "shoal", "train", "CartPole-v1", "--backend", "ray", "--ray-address", ray_address,
         "--run-dir", str(run_dir), *FAST],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=100,
    )
    payload = _last_json(done.stdout)
    assert done.returncode == 0 and payload["ok"], (payload, done.stderr[-2000:])
    assert payload["updates"] == 3 and payload["global_step"] == 192
    assert json.loads((run_dir / "config.json").read_text())["ray_address"] == ray_address


def test_connect_ray_initializes_once(ray_address: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="shoal.vector.ray"):
        assert connect_ray("10.9.9.9:6379") is ray  # already initialized: no second ray.init
    assert "already initialized" in caplog.text and ray.is_initialized()
