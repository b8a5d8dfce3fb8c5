"""Scalar logging: a CSV of every scalar, TensorBoard events, W&B (offline), a terminal dashboard.

The trainer calls :meth:`RunLogger.log` with a :class:`LogRecord`; every sink gets it. Library code writes
nothing to the terminal by itself: the :class:`Dashboard` is a sink the command line installs on a stream.

CSV format (``run_dir/scalars.csv``): one row per scalar, columns ``step,time,name,value`` (long format, so
scalars may come and go). ``time`` is seconds since the run started (cumulative across resumes).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from shoal.errors import APIUsageError

__all__ = ["CSVSink", "Dashboard", "LogRecord", "RunLogger", "TensorBoardSink", "WandbSink", "read_scalars",
           "wandb_mode"]

log = logging.getLogger(__name__)

CSV_NAME = "scalars.csv"


@dataclass
class LogRecord:
    """One logging event.

    Attributes:
        step: global agent step.
        scalars: name -> value (names are ``group/name``, e.g. ``charts/episode_return``,
        ``losses/value_loss``).
        total_steps: the step budget (for progress).
        elapsed: seconds since the run started.
        final: True for the record logged after the last update.
    """

    step: int
    scalars: dict[str, float]
    total_steps: int
    elapsed: float
    final: bool = False
    info: dict[str, Any] = field(default_factory=dict)


Sink = Callable[[LogRecord], None]


class CSVSink:
    """Append every scalar to ``run_dir/scalars.csv`` (rows past ``resume_step`` are dropped)."""

    def __init__(self, run_dir: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(run_dir) / CSV_NAME
        if resume_step is not None and self.path.exists():
            rows = read_scalars(self.path)
            kept = [r for r in rows if r["step"] <= resume_step]
            with open(self.path, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["step", "time", "name", "value"])
                writer.writerows([[r["step"], r["time"], r["name"], r["value"]] for r in kept])
        new = not self.path.exists()
        self._file = open(self.path, "a", newline="")  # noqa: SIM115 - closed in close()
        self._writer = csv.writer(self._file)
        if new:
            self._writer.writerow(["step", "time", "name", "value"])

    def __call__(self, record: LogRecord) -> None:
        t = f"{record.elapsed:.3f}"
        self._writer.writerows(
            [[record.step, t, name, repr(float(value))] for name, value in record.scalars.items()]
        )
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_scalars(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a scalars CSV as dicts ``{"step": int, "time": float, "name": str, "value": float}``."""
    path = Path(path)
    if path.is_dir():
        path = path / CSV_NAME
    out = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out.append(
                {
                    "step": int(row["step"]),
                    "time": float(row["time"]),
                    "name": row["name"],
                    "value": float(row["value"]),
                }
            )
    return out


class TensorBoardSink:
    """TensorBoard event files in ``run_dir/tensorboard`` (events past ``resume_step`` purged on resume).

    TensorBoard is an optional extra (``pip install "shoal[logging]"``) but on by default: without it this sink
    logs one warning and does nothing (:attr:`available` is False), and the other sinks (the CSV) go on.
    """

    def __init__(
        self, run_dir: str | Path, config: dict[str, Any] | None = None, resume_step: int | None = None
    ) -> None:
        self.writer: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception as exc:  # not installed, or a broken install (e.g. a protobuf mismatch)
            log.warning(
                "TensorBoard logging is off: tensorboard cannot be imported (%s: %s). Install it with "
                'pip install "shoal[logging]", or pass --no-tensorboard (tensorboard=False) to silence this; '
                "scalars still go to %s",
                type(exc).__name__,
                exc,
                Path(run_dir) / CSV_NAME,
            )
            return
        self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=resume_step)
        if config is not None and resume_step is None:
            table = "|field|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in sorted(config.items()))
            self.writer.add_text("config", table)

    @property
    def available(self) -> bool:
        """False when tensorboard is not installed (the sink then does nothing)."""
        return self.writer is not None

    def __call__(self, record: LogRecord) -> None:
        if self.writer is None:
            return
        for name, value in record.scalars.items():
            if math.isfinite(value):
                self.writer.add_scalar(name, value, record.step)
        if record.final:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def wandb_mode(configured: str | None) -> str:
    """The Weights & Biases mode of a run: ``configured`` when given, else the ``WANDB_MODE`` environment variable,
    else ``"offline"`` (a run never uploads unless asked to)."""
    return configured or os.environ.get("WANDB_MODE") or "offline"


class WandbSink:
    """Weights & Biases: files in ``run_dir/wandb``; ``mode`` as :func:`wandb_mode` resolves it (offline runs
    upload later with ``wandb sync``)."""

    def __init__(
        self, run_dir: str | Path, project: str, config: dict[str, Any], name: str | None = None,
        mode: str | None = None,
    ) -> None:
        try:
            import wandb
        except ImportError as exc:
            raise APIUsageError(
                "wandb=True but the wandb package is not installed: pip install wandb"
            ) from exc
        self._wandb = wandb
        self.mode = wandb_mode(mode)
        self.run = wandb.init(
            project=project, config=config, dir=str(run_dir), mode=self.mode, name=name, reinit=True
        )

    def __call__(self, record: LogRecord) -> None:
        self.run.log({k: v for k, v in record.scalars.items() if math.isfinite(v)}, step=record.step)

    def close(self) -> None:
        self.run.finish()


class RunLogger:
    """Fan a :class:`LogRecord` out to every sink; sinks with a ``close`` are closed by :meth:`close`."""

    def __init__(self, sinks: list[Sink] | None = None) -> None:
        self.sinks: list[Sink] = list(sinks or [])

    def log(self, record: LogRecord) -> None:
        for sink in self.sinks:
            sink(record)

    def close(self) -> None:
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # closing one sink must not hide the others
                    log.warning("closing a log sink failed", exc_info=True)


# ------------------------------------------------------------------------------------------------------------
# Terminal dashboard
# ------------------------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1e4:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


#: PPO's main statistics first, in this order; the rest (and every other algorithm's: SAC's q_loss, actor_loss,
#: alpha, ...) in the order logged, so each algorithm's progress shows its own statistics rather than PPO's blanks
_PPO_ORDER = ("policy_loss", "value_loss", "approx_kl", "clipfrac")
#: the compact line's names for PPO's statistics
_SHORT = {"policy_loss": "pg", "value_loss": "vf", "approx_kl": "kl", "clipfrac": "clip"}
#: statistics on the one-line (non-TTY) progress
_PLAIN_LOSSES = 4


def _short(name: str, scalars: dict[str, float]) -> str:
    """The compact line's label of ``losses/<name>``: PPO's (and MAPPO's) short names, others' own."""
    return _SHORT.get(name, name) if "losses/approx_kl" in scalars else name


def _losses(scalars: dict[str, float]) -> list[tuple[str, float]]:
    """The ``losses/<name>`` scalars as ``(name, value)``: PPO's in :data:`_PPO_ORDER`, then the rest as logged."""
    found = {key.removeprefix("losses/"): value for key, value in scalars.items() if key.startswith("losses/")}
    names = [n for n in _PPO_ORDER if n in found] + [n for n in found if n not in _PPO_ORDER]
    return [(name, found[name]) for name in names]


def _loss_lines(scalars: dict[str, float]) -> list[str]:
    """The dashboard's statistics lines: three per line, then the learning rate."""
    items = [f"{name.replace('_', ' ')} {_fmt(value)}" for name, value in _losses(scalars)]
    items.append(f"lr {_fmt(scalars.get('charts/learning_rate'))}")
    return [" " + "   ".join(items[i:i + 3]) for i in range(0, len(items), 3)]


def _agent_lines(scalars: dict[str, float], columns: int) -> list[str]:
    """Dashboard lines of multi-agent runs: team returns, then agent returns (``teams/*``, ``agents/*``)."""
    lines = []
    for prefix, label in (("teams/", " teams "), ("agents/", " agents")):
        parts = [f"{name[len(prefix):].rsplit('/', 1)[0]} {_fmt(value)}" for name, value in scalars.items()
                 if name.startswith(prefix) and name.endswith("/episode_return")]
        if prefix == "teams/" and "charts/team_return" in scalars:
            parts.append(f"(all {_fmt(scalars['charts/team_return'])})")
        if parts:
            text = f"{label} " + "   ".join(parts)
            lines.append(text if len(text) <= columns else text[: max(columns - 3, 10)] + "...")
    return lines


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Dashboard:
    """A live terminal view of a run: progress bar, SPS, episode stats, losses, KL, clip fraction, time split.

    On a TTY it redraws itself in place; otherwise (pipes, CI logs) it writes one compact line per record.

    Args:
        stream: where to draw (the command line passes ``sys.stderr``).
        title: first line (env and algorithm).
        live: force in-place redrawing on or off (default: ``stream.isatty()``).
    """

    def __init__(self, stream: TextIO, title: str = "", live: bool | None = None) -> None:
        self.stream = stream
        self.title = title
        self.live = stream.isatty() if live is None else live
        self._lines = 0
        self._start = time.perf_counter()

    @staticmethod
    def _bar(fraction: float, width: int) -> str:
        filled = round(min(max(fraction, 0.0), 1.0) * width)
        return "█" * filled + "·" * (width - filled)

    def render(self, record: LogRecord) -> list[str]:
        """The dashboard's lines for ``record``."""
        s = record.scalars
        frac = min(1.0, record.step / max(1, record.total_steps))
        sps = s.get("perf/sps", 0.0)
        remaining = (record.total_steps - record.step) / sps if sps > 0 else math.inf
        width = max(20, min(60, shutil.get_terminal_size((100, 20)).columns - 40))
        env_t, act_t, learn_t = (
            s.get("perf/env_fraction", 0.0),
            s.get("perf/inference_fraction", 0.0),
            s.get("perf/learn_fraction", 0.0),
        )
        lines = [
            f" {self.title}",
            f" [{self._bar(frac, width)}] {frac:6.1%}  {record.step:,}/{record.total_steps:,} steps",
            f" SPS {sps:,.0f}   elapsed {_duration(record.elapsed)}   eta {_duration(remaining)}   "
            f"update {int(s.get('charts/update', 0))}",
            f" episode return {_fmt(s.get('charts/episode_return'))}   "
            f"length {_fmt(s.get('charts/episode_length'))}"
            f"   episodes {int(s.get('charts/episodes', 0)):,}",
            *_loss_lines(s),
            f" time: env {env_t:.0%}   inference {act_t:.0%}   learn {learn_t:.0%}",
        ]
        return lines + _agent_lines(s, shutil.get_terminal_size((100, 20)).columns)

    def __call__(self, record: LogRecord) -> None:
        if self.live:
            lines = self.render(record)
            if self._lines:
                self.stream.write(f"\x1b[{self._lines}F")
            self.stream.write("".join(f"\x1b[2K{line}\n" for line in lines) + "\x1b[J")  # and clear any leftover
            self._lines = len(lines)
        else:
            s = record.scalars
            frac = min(1.0, record.step / max(1, record.total_steps))
            self.stream.write(
                f"[{frac:6.1%}] step {record.step:,}  sps {s.get('perf/sps', 0.0):,.0f}  "
                f"return {_fmt(s.get('charts/episode_return'))}  "
                f"length {_fmt(s.get('charts/episode_length'))}  "
                + "  ".join(f"{_short(name, s)} {_fmt(value)}" for name, value in _losses(s)[:_PLAIN_LOSSES])
                + "".join(f"\n{line}" for line in _agent_lines(s, 10_000))
                + "\n"
            )
        self.stream.flush()
