"""benchmarks/mappo_speed.py: the throughput target's verdicts, absolute and as a ratio to the env alone."""

from __future__ import annotations

from benchmarks import mappo_speed


def test_the_target_is_judged_against_15k_and_as_a_ratio_to_the_env_alone_in_the_same_run() -> None:
    absolute, ratio = mappo_speed.verdicts("serial", 3_153.0, 10_078.0)
    assert absolute == ("simple_spread_v3: MAPPO 3,153 agent-steps/s end to end (serial) vs target 15,000 -> MISSED")
    assert "0.313x the env alone on 2 workers (10,078)" in ratio and ">= 0.405x" in ratio and ratio.endswith("MISSED")

    # 4,100 / 10,000 = 0.410 >= 15k / 37k = 0.4054: met as a ratio although far below 15k here
    absolute, ratio = mappo_speed.verdicts("2 workers", 4_100.0, 10_000.0)
    assert absolute.endswith("MISSED") and ratio.endswith("-> met")
    assert mappo_speed.verdicts("x", 15_000.0, 37_000.0)[0].endswith("-> met")
    assert mappo_speed.verdicts("x", 4_000.0, 10_000.0)[1].endswith("MISSED")  # 0.400 < 0.405
