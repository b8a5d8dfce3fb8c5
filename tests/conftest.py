"""Tests use tiny tensors: run torch single-threaded so they stay fast on a shared 2-core machine (idle OpenMP
threads spin while another process holds a core, making small LAPACK/BLAS calls ~40x slower), and so torch's
threads do not compete with the multiprocessing backend's workers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
