"""Timing helpers shared by the benchmark scripts."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


def rate(fn: Callable[[], int], seconds: float = 1.0, repeats: int = 3) -> float:
    """Best-of-``repeats`` rate of ``fn`` (which returns how many units it did per call) in units/second."""
    best = 0.0
    for _ in range(repeats):
        done = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            done += fn()
        best = max(best, done / (time.perf_counter() - start))
    return best


def line(name: str, value: float, unit: str, ref: float | None = None, ref_name: str = "") -> str:
    """One aligned result line, with the ratio to a reference when given."""
    text = f"{name:<48} {value:>14,.0f} {unit}"
    if ref:
        text += f"   {value / ref:6.2f}x {ref_name}"
    return text


def verdict(name: str, ratio: float, target: float) -> str:
    """One aligned target line: the ratio, rounded down to three decimals (so a figure just under its target
    never prints as meeting it: 0.8997 shows as 0.899), and whether it meets ``target``."""
    shown = math.floor(ratio * 1000) / 1000
    return f"{name:<66} {shown:7.3f}x   (target >= {target}x: {'met' if ratio >= target else 'MISSED'})"
