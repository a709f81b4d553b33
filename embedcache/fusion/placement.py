"""Where a training's tensors live and how its step runs: the stores on the device once, or in host memory with
pinned minibatch copies; the head's precision (fp32, or bf16 autocast); optionally torch.compile.

`place` moves a split's stores to the GPU ONCE when they fit its free memory (GPU training then gathers every
minibatch on the device, with no copies per batch); when they do not, the stores stay in host memory, each
minibatch is gathered there in the stored dtype (fp16 tokens), pinned and copied with non_blocking=True, and
cast on the device. `loss_fn` wraps a head's loss in the precision's autocast and, when asked, torch.compile.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from embedcache.errors import BadInputError
from embedcache.fusion.heads import Batch, Head
from embedcache.fusion.jobs import PRECISIONS
from embedcache.fusion.views import PairData

PAD_SLACK = 1.5  # on a GPU, ragged rows pad to the store's longest when it is within this factor of the mean
DEVICE_SHARE = 0.7  # stores may take this share of the GPU's free memory; the rest is for activations
STORES = ("auto", "device", "host")  # RunOptions.stores: on the device when they fit, always, never


def loss_fn(head: Head, precision: str = "fp32", compile: bool = False) -> Callable[[Batch], torch.Tensor]:
    """The head's loss as a function of a batch, under the precision's autocast (bf16 keeps fp32's exponent
    range, so no loss scaling; autocast keeps softmax, cross-entropy and LayerNorm in fp32), compiled when
    `compile`."""
    dtype = getattr(torch, PRECISIONS.get(precision))
    step = torch.compile(head.loss) if compile else head.loss
    if dtype == torch.float32:
        return step
    device_type = next((p.device.type for p in head.parameters()), "cpu")

    def autocast_loss(batch: Batch) -> torch.Tensor:
        with torch.autocast(device_type, dtype=dtype):
            return step(batch)

    return autocast_loss


def data_bytes(*datas: PairData) -> int:
    """Bytes of the tensors of every distinct view and row table of `datas` (what moving them would take)."""
    tensors = [t for d in datas for v in d.views for t in (v.pooled, v.tokens, v.offsets)] + \
              [t for d in datas for t in (d.rows, d.labels)]
    tensors = list({id(t): t for t in tensors if t is not None}.values())  # views shared by the sets: once
    return sum(t.numel() * t.element_size() for t in tensors)


def pad_to_longest(*datas: PairData, slack: float = PAD_SLACK) -> None:
    """Ragged token views pad every minibatch to their longest row when it is within `slack` of the mean length:
    fixed shapes, and no device-to-host read of each batch's longest row (a GPU sync per step). Padding is
    masked everywhere, so the function is the same."""
    for view in {id(v): v for d in datas for v in d.views}.values():
        if view.offsets is not None and view.stream is None and len(view):
            lengths = (view.offsets[1:] - view.offsets[:-1]).float()
            longest = int(lengths.max())
            view.pad_to = longest if longest <= slack * float(lengths.mean()) else None


def fits(need: int, free: int, share: float = DEVICE_SHARE) -> bool:
    """Whether `need` bytes of stores fit `share` of `free` bytes of device memory."""
    return need <= share * free


def place(train: PairData, val: PairData, device: torch.device, stores: str = "auto",
          free: int | None = None) -> str:
    """Put train and val where the step reads them; returns a one-line note when the stores stay on the host.

    On the CPU, and for streamed token stores, the data simply moves to `device`. On a GPU, `stores` 'device'
    (or 'auto' when they fit `DEVICE_SHARE` of the free memory, `free` bytes or torch.cuda.mem_get_info) moves
    them there once; 'host' (or 'auto' when they do not fit) keeps them in host memory and copies minibatches."""
    if stores not in STORES:
        raise BadInputError(f"unknown stores placement {stores!r}; known: {', '.join(STORES)}")
    streamed = any(v.stream is not None for d in (train, val) for v in d.views)
    if device.type != "cuda" or streamed:
        train.to(device), val.to(device)
        return ""
    pad_to_longest(train, val)
    need = data_bytes(train, val)
    if free is None:
        free = torch.cuda.mem_get_info(device)[0]
    if stores == "device" or (stores == "auto" and fits(need, free)):
        train.to(device), val.to(device)
        return ""
    for d in (train, val):
        d.to("cpu")
        d.batch_device = device
    return (f"stores ({need / 2**30:.1f} GiB) kept in host memory, not on {device} ({free / 2**30:.1f} GiB free): "
            "minibatches are gathered there and copied over (pinned, non-blocking)")
