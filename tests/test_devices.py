"""--device: checked against the machine; the CPU chosen on a machine with a GPU is said loudly."""

from __future__ import annotations

import logging

import pytest
import torch

from embedcache.devices import resolve_device
from embedcache.errors import BadInputError


def test_cpu_on_a_machine_with_a_gpu_warns(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # this machine has no GPU: pretend one
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with caplog.at_level(logging.WARNING, logger="embedcache.devices"):
        assert resolve_device("cpu") == torch.device("cpu")
    assert "2 CUDA GPU(s)" in caplog.text and "--device cuda" in caplog.text


def test_cpu_without_a_gpu_is_quiet(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="embedcache.devices"):
        assert resolve_device("cpu") == torch.device("cpu")
    assert caplog.text == ""
    with pytest.raises(BadInputError, match="no CUDA GPU"):
        resolve_device("cuda")
