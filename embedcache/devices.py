"""The torch device a command runs on: --device, checked against what this machine has."""

from __future__ import annotations

import logging

import torch

from embedcache.errors import BadInputError

log = logging.getLogger(__name__)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`device` as a torch.device (None: cuda when a GPU is visible, else cpu). A name torch does not know, or a
    CUDA device on a machine where torch sees no GPU, is a BadInputError naming what this machine offers; the CPU
    chosen on a machine with a GPU is a warning."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise BadInputError(f"--device {device!r} is not a device name; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise BadInputError(f"--device {device}: torch sees no CUDA GPU on this machine; use --device cpu "
                                "(or leave --device out)")
        if dev.index is not None and dev.index >= count:
            raise BadInputError(f"--device {device}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    if dev.type == "cpu" and torch.cuda.is_available():  # loud: a GPU run is often 10-100x faster
        log.warning("--device %s although this machine has %d CUDA GPU(s): leave --device out (or --device cuda) to "
                    "use them", device, torch.cuda.device_count())
    return dev
