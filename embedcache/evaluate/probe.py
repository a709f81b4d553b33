"""Linear probe on frozen features and fine-tuning of an encoder with a linear classifier.

Both follow CBMF's protocol: train for `epochs`, report test accuracy after the epochs in `log_at`
(20/40/60/80/100 in the paper's tables). The authors' scripts use SGD (lr 1e-3, momentum 0.9, batch
64) on the raw head outputs, our defaults too (`standardize=True` with a larger batch is the option); their
classifier is Linear -> Linear (256 -> 128 -> C, no activation), here one nn.Linear (the same function
class), and the optimiser comes from OPTIMIZERS. The whole data set stays in memory as tensors and minibatches
are permutation slices, never a DataLoader. Training runs under a forked, seeded torch RNG: equal seeds
give equal numbers and the caller's global RNG state is left as it was.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from embedcache.errors import BadInputError
from embedcache.evaluate._common import ArrayLike, as_float, as_long, check_rows, join
from embedcache.registry import Registry

Inputs = torch.Tensor | tuple[torch.Tensor, ...]
EVAL_BATCH = 1024

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")
OPTIMIZERS.register("sgd", lambda params, lr, wd: torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd))
OPTIMIZERS.register("adamw", lambda params, lr, wd: torch.optim.AdamW(params, lr=lr, weight_decay=wd))


def linear_probe(
    train_x: ArrayLike, train_y: ArrayLike, test_x: ArrayLike, test_y: ArrayLike, *,
    epochs: int = 100, log_at: Sequence[int] = (20, 40, 60, 80, 100), lr: float = 1e-3, batch_size: int = 64,
    weight_decay: float = 0.0, seed: int = 0, optimizer: str = "sgd", prefix: str = "probe",
    standardize: bool = False,
) -> dict[str, float]:
    """Train a linear classifier on frozen features train_x (N, D) -> train_y (N,) and return the test
    accuracy `{prefix}_acc@{e}` and top-5 accuracy `{prefix}_top5@{e}` after each epoch e in `log_at`.
    Defaults are the CBMF authors' (raw features, batch 64, SGD lr 1e-3 momentum 0.9); standardize=True
    scales features with the TRAIN mean and std only (test rows never leak into them)."""
    xtr, xte = as_float(train_x), as_float(test_x)
    ytr, yte = as_long(train_y, xtr.device), as_long(test_y, xtr.device)
    _check_data(xtr, ytr, xte, yte, epochs, log_at)
    xte = xte.to(xtr.device)
    if standardize:
        mean, std = xtr.mean(dim=0), xtr.std(dim=0, unbiased=False).clamp_min(1e-6)
        xtr, xte = (xtr - mean) / std, (xte - mean) / std
    with _seeded(seed, xtr.device):
        head = nn.Linear(xtr.shape[1], _num_classes(ytr, yte)).to(xtr.device)
        opt = OPTIMIZERS.get(optimizer)(head.parameters(), lr, weight_decay)
        return _train(head, lambda idx: head(xtr[idx]), lambda idx: head(xte[idx]),
                      ytr, yte, opt, epochs, log_at, batch_size, prefix)


def finetune(
    encoder: nn.Module, train_inputs: Inputs, train_y: ArrayLike, test_inputs: Inputs, test_y: ArrayLike, *,
    epochs: int = 100, log_at: Sequence[int] = (20, 40, 60, 80, 100), lr: float = 1e-3, seed: int = 0,
    collate: Callable[[Inputs], Inputs] | None = None, batch_size: int = 64, weight_decay: float = 0.0,
    optimizer: str = "sgd", prefix: str = "finetune",
) -> dict[str, float]:
    """Train a deep copy of `encoder` (the caller's module is untouched) plus a linear classifier on its
    (B, D) output; return `{prefix}_acc@{e}` and `{prefix}_top5@{e}` on the test set after each epoch in
    `log_at`. Inputs are a tensor or a tuple of tensors indexed by row; a row batch goes through
    `collate` if given, then into the encoder (a tuple is unpacked into positional arguments)."""
    enc = copy.deepcopy(encoder)
    device = next((p.device for p in enc.parameters()), _first(train_inputs).device)
    ytr, yte = as_long(train_y, device), as_long(test_y, device)
    _check_data(_first(train_inputs), ytr, _first(test_inputs), yte, epochs, log_at)
    with _seeded(seed, device):
        dim = _output_dim(enc, train_inputs, collate, device)
        model = nn.ModuleDict({"encoder": enc, "head": nn.Linear(dim, _num_classes(ytr, yte))}).to(device)
        opt = OPTIMIZERS.get(optimizer)(model.parameters(), lr, weight_decay)

        def logits(inputs: Inputs) -> Callable[[torch.Tensor], torch.Tensor]:
            return lambda idx: model["head"](_encode(enc, _take(inputs, idx, device), collate))

        return _train(model, logits(train_inputs), logits(test_inputs), ytr, yte, opt, epochs, log_at,
                      batch_size, prefix)


def _train(
    model: nn.Module, train_logits: Callable[[torch.Tensor], torch.Tensor],
    test_logits: Callable[[torch.Tensor], torch.Tensor], ytr: torch.Tensor, yte: torch.Tensor,
    opt: torch.optim.Optimizer, epochs: int, log_at: Sequence[int], batch_size: int, prefix: str,
) -> dict[str, float]:
    """Cross-entropy epochs over permutation minibatches; evaluate after each epoch in `log_at`."""
    out: dict[str, float] = {}
    for epoch in range(1, epochs + 1):
        model.train()
        for idx in torch.randperm(len(ytr)).to(ytr.device).split(batch_size):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(train_logits(idx), ytr[idx]).backward()
            opt.step()
        if epoch in log_at:
            top1, top5 = _evaluate(model, test_logits, yte)
            out[join(prefix, f"acc@{epoch}")], out[join(prefix, f"top5@{epoch}")] = top1, top5
    return out


@torch.no_grad()
def _evaluate(model: nn.Module, logits: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor) -> tuple[float, float]:
    """Top-1 and top-5 accuracy in eval mode (dropout off), EVAL_BATCH rows at a time."""
    model.eval()
    hits1 = hits5 = 0
    for idx in torch.arange(len(y), device=y.device).split(EVAL_BATCH):
        scores = logits(idx)  # (b, C)
        true = scores.gather(1, y[idx, None])
        rank = (scores >= true).sum(dim=1) - 1  # 0-based rank of the true class; ties count against it
        hits1 += int((rank < 1).sum())
        hits5 += int((rank < 5).sum())
    return hits1 / len(y), hits5 / len(y)


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Fork the global torch RNG (CPU, and this CUDA device if any), seed it, restore it on exit."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        torch.manual_seed(seed)
        yield


def _encode(enc: nn.Module, batch: Inputs, collate: Callable[[Inputs], Inputs] | None) -> torch.Tensor:
    args = collate(batch) if collate is not None else batch
    out = enc(*args) if isinstance(args, tuple) else enc(args)
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise BadInputError(f"the encoder must return pooled features (B, D); it returned {shape}. "
                            "Wrap it so that it pools (e.g. mean over tokens) before fine-tuning")
    return out


def _output_dim(enc: nn.Module, inputs: Inputs, collate: Callable[[Inputs], Inputs] | None,
                device: torch.device) -> int:
    """D of the encoder's output, from one forward pass over the first two rows in eval mode."""
    enc.eval()
    with torch.no_grad():
        return _encode(enc.to(device), _take(inputs, torch.arange(min(2, len(_first(inputs)))), device),
                       collate).shape[1]


def _take(inputs: Inputs, idx: torch.Tensor, device: torch.device) -> Inputs:
    """Rows `idx` of a tensor or of every tensor in a tuple, moved to `device`."""
    if isinstance(inputs, tuple):
        return tuple(t[idx.to(t.device)].to(device) for t in inputs)
    return inputs[idx.to(inputs.device)].to(device)


def _first(inputs: Inputs) -> torch.Tensor:
    return inputs[0] if isinstance(inputs, tuple) else inputs


def _num_classes(*labels: torch.Tensor) -> int:
    return int(max(int(y.max()) for y in labels)) + 1


def _check_data(xtr: torch.Tensor, ytr: torch.Tensor, xte: torch.Tensor, yte: torch.Tensor,
                epochs: int, log_at: Sequence[int]) -> None:
    check_rows("train inputs", len(xtr), "train_y", len(ytr))
    check_rows("test inputs", len(xte), "test_y", len(yte))
    if int(ytr.min()) < 0 or int(yte.min()) < 0:
        raise BadInputError("labels must be class indices >= 0")
    late = [e for e in log_at if not 1 <= e <= epochs]
    if late:
        raise BadInputError(f"log_at epochs {late} are outside 1..{epochs}; raise epochs or drop them from log_at")
