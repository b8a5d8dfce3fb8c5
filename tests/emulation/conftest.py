"""Fixtures shared by the emulation tests."""

from __future__ import annotations

import pytest

import shoal.emulation.gymnasium
import shoal.emulation.gymnasium_batch


@pytest.fixture(params=["native", "memoryview"])
def row_copy(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the native row copy and again with the memoryview writes used without it."""
    if request.param == "memoryview":
        monkeypatch.setattr(shoal.emulation.gymnasium, "copy_row", None)
        monkeypatch.setattr(shoal.emulation.gymnasium_batch, "copy_row", None)
    return request.param
