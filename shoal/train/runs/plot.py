"""Learning curves of a run directory as one PNG (``shoal plot RUN_DIR``)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from shoal.errors import APIUsageError
from shoal.train.runs.logger import CSV_NAME, read_scalars

__all__ = ["plot_run"]

#: Panels drawn first, in this order, when the run logged them; every other scalar follows alphabetically.
PREFERRED = (
    "charts/episode_return",
    "charts/episode_length",
    "eval/mean_return",
    "losses/policy_loss",
    "losses/value_loss",
    "losses/entropy",
    "losses/approx_kl",
    "losses/clipfrac",
    "losses/explained_variance",
    "perf/sps",
    "charts/learning_rate",
)


def plot_run(run_dir: str | Path, out: str | Path | None = None, names: list[str] | None = None) -> Path:
    """Plot every scalar of ``run_dir/scalars.csv`` against the step.

    Args:
        run_dir: the run directory.
        out: the PNG to write (default ``run_dir/curves.png``).
        names: scalars to plot (default: every scalar, :data:`PREFERRED` first).

    Returns:
        The path of the PNG.

    Raises:
        APIUsageError: matplotlib is missing (the message says ``pip install "shoal[logging]"``), no scalars CSV,
            or none of ``names`` was logged.
    """
    try:
        import matplotlib
    except ImportError as exc:
        raise APIUsageError(f'plotting needs matplotlib: pip install "shoal[logging]" ({exc})') from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    csv_path = run_dir / CSV_NAME
    if not csv_path.is_file():
        raise APIUsageError(f"{run_dir} has no {CSV_NAME}: give the run directory of a `shoal train` run")
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for row in read_scalars(csv_path):
        series[row["name"]].append((row["step"], row["value"]))
    if names is None:
        names = [n for n in PREFERRED if n in series] + sorted(n for n in series if n not in PREFERRED)
    names = [n for n in names if n in series]
    if not names:
        raise APIUsageError(f"{csv_path} holds none of the requested scalars; it has {sorted(series)}")
    cols = 3 if len(names) > 4 else max(1, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        points = sorted(series[name])
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            marker="." if len(points) < 3 else None,
            linewidth=1.2,
        )
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(run_dir.name, fontsize=10)
    fig.tight_layout()
    out = Path(out) if out is not None else run_dir / "curves.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
