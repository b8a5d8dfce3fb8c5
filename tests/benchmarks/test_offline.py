"""benchmarks/offline.py's verdicts on the Decision Transformer: means with standard errors, "DT >= BC" within the
combined 2-standard-error margin, and "rises with its target" only beyond the noise."""

from __future__ import annotations

import math

import pytest

from benchmarks.offline import at_least, margin, mean_se, rises


def test_mean_se_is_the_mean_and_the_sample_standard_deviation_over_root_n() -> None:
    mean, se = mean_se([1.0, 2.0, 3.0, 6.0])
    assert mean == 3.0 and se == pytest.approx(math.sqrt(14 / 3) / 2)
    assert mean_se([5.0]) == (5.0, 0.0)
    assert margin(3.0, 4.0) == 10.0


@pytest.mark.parametrize(("dt", "bc", "met", "case"), [
    ((110.0, 5.0), (100.0, 5.0), True, "above BC's by 10.0"),
    ((95.0, 3.0), (100.0, 4.0), True, "below BC's by 5.0, within the 2-SE margin 10.0"),
    ((89.0, 3.0), (100.0, 4.0), False, "below BC's by 11.0, more than the 2-SE margin 10.0"),
])
def test_dt_at_least_bc_allows_a_shortfall_within_the_noise_only(dt: tuple[float, float], bc: tuple[float, float],
                                                                  met: bool, case: str) -> None:
    ok, why = at_least(dt, bc)
    assert ok is met and case in why


@pytest.mark.parametrize(("returns", "met", "case"), [
    # the last measured Pendulum run: the two highest targets give the same return within the noise
    ([(-1203.4, 20.0), (-252.1, 15.0), (-252.7, 15.0)], True, "exceeds the lowest's by 950.7"),
    ([(10.0, 3.0), (20.0, 3.0), (30.0, 4.0)], True, "exceeds the lowest's by 20.0 > 2-SE margin 10.0"),
    # a rise no larger than the noise is no rise
    ([(10.0, 3.0), (15.0, 3.0), (19.0, 4.0)], False, "by 9.0, not more than the 2-SE margin 10.0"),
    # a large overall rise with one step down beyond its margin (step 2: 60 -> 40, margin 2 * hypot(3, 4) = 10)
    ([(10.0, 3.0), (60.0, 3.0), (40.0, 4.0)], False, "step 2 up in target lowers the return by 20.0"),
    # the same dip within its margin is noise
    ([(10.0, 3.0), (45.0, 3.0), (40.0, 4.0)], True, "no step lowers it by more than its margin"),
])
def test_rises_needs_the_span_beyond_the_noise_and_no_step_down_beyond_it(returns: list[tuple[float, float]],
                                                                          met: bool, case: str) -> None:
    ok, why = rises(returns)
    assert ok is met and case in why, why
