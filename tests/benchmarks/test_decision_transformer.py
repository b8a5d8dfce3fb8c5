"""benchmarks/decision_transformer.py: a tiny run prints the DT at three targets beside BC, and both verdicts."""

from __future__ import annotations

import re

import pytest

from benchmarks import decision_transformer


def test_a_tiny_run_prints_the_dt_at_three_targets_beside_bc(capsys: pytest.CaptureFixture[str]) -> None:
    decision_transformer.main(["--ppo-steps", "512", "--bc-steps", "20", "--dt-steps", "20", "--seeds", "3"])
    out = capsys.readouterr().out
    targets = [float(t) for t in re.findall(r"shoal DT  target +([\d.]+): return +[\d.]+", out)]
    assert len(targets) == 3 and targets == sorted(targets)  # the median, the 90th percentile, the best
    returns = [float(r) for r in re.findall(r"return +([\d.]+)\n", out)]
    assert len(returns) == 4 and all(8 <= r <= 500 for r in returns)  # CartPole's shortest and longest episodes
    assert re.search(r"DT at the best target >= BC: (met|MISSED) .*DT return rises with the target: (met|MISSED)",
                     out)
    assert "both targets met on" in out
