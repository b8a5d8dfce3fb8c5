"""benchmarks/datasets.py: shoal's save and load print beside Minari's own write and read of the same episodes."""

from __future__ import annotations

import pytest

from benchmarks import datasets


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_small_run_prints_both_figures_and_the_verdicts(capsys: pytest.CaptureFixture[str]) -> None:
    datasets.main(["--steps", "100", "--envs", "nested", "--repeats", "1"])
    out = capsys.readouterr().out.splitlines()
    # benchmarks.common.line: the name in 48 columns, then the figure
    rates = {line[:48].strip(): float(line[48:63].replace(",", "")) for line in out if "steps/s" in line}
    assert set(rates) == {"nested: shoal save_dataset", "nested: Minari create_dataset_from_buffers",
                          "nested: shoal load_dataset (flat rows)", "nested: Minari iterate_episodes (native)"}
    assert all(rate > 0 for rate in rates.values())
    assert sum("target >= 0.6x" in line for line in out) == 2
