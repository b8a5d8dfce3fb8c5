"""TrainConfig: documented fields, validation, round trips; logging sinks and the dashboard."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest

from shoal.errors import APIUsageError
from shoal.train import TrainConfig
from shoal.train.config import field_docs
from shoal.train.runs.logger import CSVSink, Dashboard, LogRecord, read_scalars
from shoal.train.runs.plot import plot_run


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
    ],
)
def test_validation_names_the_field(changes: dict, message: str) -> None:
    with pytest.raises(APIUsageError, match=message):
        TrainConfig(**changes).validate()


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
