"""Shared test fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models and heads run microsecond ops, where a second intra-op thread costs more than it gives (2-10x
    slower measured on a shared 2-core machine); one thread for the module using it, restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
