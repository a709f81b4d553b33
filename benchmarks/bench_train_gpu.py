"""Stage two at COCO size on a GPU (or the CPU): one cbmf-add epoch with tokens, and what the cache buys.

The stand-in: COCO's training split as the CBMF paper reads it, 82,783 images x 5 captions = 413,915 pairs;
per image 197 tokens (ViT-B/16), per caption 10-18 tokens (mean 14, BERT-base), all 768-d, random fp16 values
generated on the device in the stores' layout (image tokens (N, 197, 768), captions ragged with offsets), joined
as pairs (caption -> its image): 25 GB + 9 GB of fp16 tokens, held on the GPU once. One epoch runs through the
product's loop (`embedcache.fusion.train.fit`, batch 64 by default, `--precision bf16` by default on a GPU,
optional `--compile`); when a pilot predicts more than `--budget-s`, a sample of steps is timed and scaled.

Beside it, side by side in the same run:
- the head's training step with torch's own layer (nn.TransformerEncoderLayer, torch's dropout) and with this
  repository's (`OneTokenEncoderLayer`: direct SDPA, the CPU's cheap dropout), on the same batches: GFLOP/s each;
- re-encoding: the paper's backbones, ViT-B/16 + BERT-base (timm/transformers with random weights when
  installed, else plain-torch stand-ins of the same architectures: same FLOPs), per item on the same device and
  precision; FLOPs counted with FlopCounterMode as benchmarks/bench_train.py does;
- the cache speedup of the epoch, measured ((re-encoding + head epoch) / head epoch) and arithmetic ((re-encode
  + head step FLOPs) / head step FLOPs), and their ratio (goal >= 0.75), for the stock and the new step.

Prints a table and, as its last line, one JSON object.

    python benchmarks/bench_train_gpu.py [--device cuda] [--precision bf16] [--compile] [--batch 64]
    python benchmarks/bench_train_gpu.py --tiny          # seconds, on the CPU: the smoke test's run
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from bench_train import count_flops, sync
from torch import nn

from embedcache.fusion.heads import HeadSpec, create_head, kernels
from embedcache.fusion.placement import loss_fn, pad_to_longest
from embedcache.fusion.train import TrainCfg, fit, step_cap
from embedcache.fusion.views import PairData, View

CLOCK = {"wall": time.perf_counter, "process": time.process_time}  # process: CPU seconds, steady on a shared CPU
clock = CLOCK["wall"]


@dataclass(frozen=True)
class Shape:
    """The stand-in's sizes and the backbones' (layers, width, heads, ff, image side, text length)."""

    images: int = 82_783
    captions: int = 5
    image_tokens: int = 197
    text_tokens: tuple[int, int] = (10, 18)
    dim: int = 768
    layers: int = 12
    heads: int = 12
    ff: int = 3072
    image_side: int = 224
    caption_len: int = 16  # with [CLS]/[SEP], as bench_train's re-encoding
    head_options: tuple[tuple[str, int], ...] = ()  # cbmf-add's own (default: the paper's, d 256, ff 2048)

    @property
    def pairs(self) -> int:
        return self.images * self.captions


TINY = Shape(images=48, captions=2, image_tokens=17, text_tokens=(3, 7), dim=64, layers=1, heads=4, ff=128,
             image_side=64, caption_len=8, head_options=(("dim", 32), ("ff_dim", 64)))


def coco_standin(shape: Shape, device: str, seed: int = 0) -> PairData:
    """Image and caption views in the store layout, generated on `device` (fp16 tokens, fp32 pooled), as pairs."""
    g = torch.Generator(device=device).manual_seed(seed)
    n, c = shape.images, shape.pairs
    img = torch.randn(n, shape.image_tokens, shape.dim, generator=g, device=device, dtype=torch.float16)
    lo, hi = shape.text_tokens
    lengths = torch.randint(lo, hi + 1, (c,), generator=g, device=device)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64, device=device), lengths.cumsum(0)])
    txt = torch.randn(int(offsets[-1]), shape.dim, generator=g, device=device, dtype=torch.float16)
    image = View(path="<coco-standin>", split="train", ids=np.arange(n).astype(str),
                 pooled=img.mean(1, dtype=torch.float32), tokens=img)
    text = View(path="<coco-standin>", split="train", ids=np.arange(c).astype(str),
                pooled=torch.zeros(c, shape.dim, device=device), tokens=txt, offsets=offsets)
    rows = torch.stack([torch.arange(c, device=device) // shape.captions, torch.arange(c, device=device)], 1)
    data = PairData([image, text], rows)
    pad_to_longest(data)  # as `place` does on a GPU
    return data


# ---------------------------------------------------------------- the head


def make_head(shape: Shape, device: str, stock: bool) -> nn.Module:
    """cbmf-add at the paper's dims; stock: torch's nn.TransformerEncoderLayer in the fusion encoder."""
    torch.manual_seed(0)
    spec = HeadSpec.create("cbmf-add", (shape.dim, shape.dim), ("image", "text"), **dict(shape.head_options))
    head = create_head(spec)
    if stock:
        cfg, state = head.cfg, head.state_dict()
        head.dfe.blocks[0] = nn.TransformerEncoderLayer(cfg.dim, cfg.num_heads, cfg.ff_dim, cfg.dropout,
                                                        batch_first=True)
        head.load_state_dict(state)
    return head.to(device).train()


def epoch_seconds(data: PairData, shape: Shape, device: str, batch: int, precision: str, compile: bool,
                  budget_s: float) -> tuple[float, int]:
    """One epoch through `fit` (a one-batch validation set): seconds, and the steps timed (all, or a sample
    scaled up when a pilot predicts more than budget_s)."""
    steps = len(data) // batch
    val = data.subset(torch.arange(batch, device=data.rows.device))
    cfg = TrainCfg(epochs=1, batch_size=batch, precision=precision)
    head = make_head(shape, device, stock=False)
    pilot = min(steps, 30 if compile else 10)
    with step_cap(pilot):  # warm-up: cuBLAS/cuDNN set-up, autotuning, compilation
        fit(head, data, val, cfg, compile=compile)
    with step_cap(pilot):
        per_step = fit(head, data, val, cfg, compile=compile).history[0]["seconds"] / pilot
    timed = steps if per_step * steps <= budget_s else max(pilot, int(budget_s / per_step))
    head = make_head(shape, device, stock=False)
    with step_cap(timed if timed < steps else None):
        seconds = fit(head, data, val, cfg, compile=compile).history[0]["seconds"]
    return seconds * steps / timed, timed


def step_rates(data: PairData, shape: Shape, device: str, batch: int, precision: str, repeats: int, count: int
               ) -> dict[str, float]:
    """Seconds per training step of the stock and the new head on the same batches, interleaved, fastest of
    `repeats` rounds of `count` steps each."""
    count = max(1, min(count, len(data) // batch))
    batches = [data.batch(torch.arange(i * batch, (i + 1) * batch, device=data.rows.device)) for i in range(count)]
    out: dict[str, list[float]] = {"stock": [], "new": []}
    heads = {name: make_head(shape, device, name == "stock") for name in out}
    opts = {name: torch.optim.AdamW(h.parameters(), lr=1e-3, weight_decay=1e-3, fused=True)
            for name, h in heads.items()}

    def run(name: str) -> None:
        loss_of = loss_fn(heads[name], precision)
        for b in batches:
            loss = loss_of(b)
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()

    for name in out:  # warm-up
        with kernels.torch_dropout() if name == "stock" else nullcontext():
            run(name)
    for _ in range(repeats):
        for name in out:
            with kernels.torch_dropout() if name == "stock" else nullcontext():
                sync(device)
                t0 = clock()
                run(name)
                sync(device)
                out[name].append((clock() - t0) / len(batches))
    return {name: min(v) for name, v in out.items()}


def head_flops_per_pair(data: PairData, shape: Shape, device: str, batch: int) -> float:
    head = make_head(shape, device, stock=False)
    b = data.batch(torch.arange(batch, device=data.rows.device))
    return count_flops(lambda: head.loss(b).backward()) / batch


# ---------------------------------------------------------------- re-encoding


def backbones(shape: Shape, device: str) -> tuple[dict[str, nn.Module], str]:
    """The paper's image and text backbones with random weights: timm ViT-B/16 + transformers BERT-base when
    installed (and the shape is the paper's), else plain-torch stand-ins of the same architectures."""
    arch = ("dim", "layers", "heads", "ff", "image_side", "image_tokens", "caption_len")
    if all(getattr(shape, a) == getattr(Shape(), a) for a in arch):  # the paper's, whatever the stand-in's size
        try:
            import timm
            from transformers import BertConfig, BertModel

            vit = timm.create_model("vit_base_patch16_224", pretrained=False)
            return {"image": _Call(vit.forward_features), "text": _Bert(BertModel(BertConfig()))}, "timm + transformers"
        except ImportError:
            pass
    return {"image": StandInViT(shape), "text": StandInBert(shape)}, "plain-torch stand-ins of the same architectures"


class _Call(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn
        self.owner = fn.__self__

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class _Bert(nn.Module):
    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state


def _encoder(shape: Shape, norm_first: bool) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(shape.dim, shape.heads, shape.ff, 0.0, activation="gelu", batch_first=True,
                                       norm_first=norm_first)
    return nn.TransformerEncoder(layer, shape.layers, enable_nested_tensor=False)


class StandInViT(nn.Module):
    """ViT-B/16's computation: 16 x 16 patches -> 768-d, [CLS] + positions, 12 pre-norm blocks, LayerNorm."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, shape.dim, 16, 16)
        self.cls = nn.Parameter(torch.zeros(1, 1, shape.dim))
        self.pos = nn.Parameter(torch.zeros(1, (shape.image_side // 16) ** 2 + 1, shape.dim))
        self.blocks, self.norm = _encoder(shape, norm_first=True), nn.LayerNorm(shape.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)  # (B, 196, 768)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], 1) + self.pos
        return self.norm(self.blocks(x))


class StandInBert(nn.Module):
    """BERT-base's computation: token + position embeddings, LayerNorm, 12 post-norm blocks."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(30522, shape.dim), nn.Embedding(512, shape.dim)
        self.norm, self.blocks = nn.LayerNorm(shape.dim), _encoder(shape, norm_first=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.norm(self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))))


def reencode(shape: Shape, device: str, precision: str, batch: int, steps: int) -> dict[str, float]:
    """Per item: seconds and FLOPs of each backbone's forward (inference mode, the head's precision)."""
    models, source = backbones(shape, device)
    inputs = {"image": lambda b: torch.randn(b, 3, shape.image_side, shape.image_side, device=device),
              "text": lambda b: torch.randint(1000, 2000, (b, shape.caption_len), device=device)}
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    out: dict[str, float | str] = {"source": source}
    for name, model in models.items():
        model = model.to(device).eval()
        x = inputs[name](batch)
        with torch.inference_mode(), torch.autocast(torch.device(device).type, dtype, enabled=precision == "bf16"):
            model(x)  # warm-up
            sync(device)
            t0 = clock()
            for _ in range(steps):
                model(x)
            sync(device)
        out[f"{name}_s"] = (clock() - t0) / (steps * batch)
        small = inputs[name](2)
        with torch.enable_grad():  # torch's fused inference layers escape FlopCounterMode: count the plain path
            out[f"{name}_flops"] = count_flops(lambda m=model, s=small: m(s)) / 2
        del model
    return out


# ---------------------------------------------------------------- main


def speedups(res: dict[str, object], enc_s: float, enc_flops: float, head_flops: float, epoch_s: dict[str, float],
             pairs: int) -> None:
    """Measured and arithmetic cache speedups of each epoch time (by key prefix) into res, and their ratio."""
    res["arith_speedup_tokens"] = round((enc_flops + head_flops) / head_flops, 2)
    res["reencode_epoch_s"] = round(pairs * enc_s, 1)
    res["reencode_gflop_per_s"] = round(enc_flops / enc_s / 1e9, 1)
    for name, seconds in epoch_s.items():
        measured = (pairs * enc_s + seconds) / seconds
        res[f"{name}_head_gflop_per_s"] = round(pairs * head_flops / seconds / 1e9, 1)
        res[f"{name}_cache_speedup_tokens"] = round(measured, 2)
        res[f"{name}_speedup_vs_bound"] = round(measured / res["arith_speedup_tokens"], 3)


def batch_list(text: str) -> list[int]:
    return [int(b) for b in text.split(",")]


def arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--images", type=int, default=None,
                    help="images of the stand-in (default COCO's 82,783 on a GPU, 1,024 on a CPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's; 1 on a shared "
                                                                 "CPU avoids threads spinning on each other)")
    ap.add_argument("--tiny", action="store_true", help="tiny dims and backbones (the smoke test; seconds on a CPU)")
    ap.add_argument("--batch", type=batch_list, default=None,
                    help="pairs per step, comma-separated: an epoch for each; the first is compared stock vs new "
                         "(default 64,1024 on a GPU - the paper's and a larger one -, 64 on a CPU, 8 --tiny)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default=None, help="default: bf16 on a GPU, else fp32")
    ap.add_argument("--compile", action="store_true", help="torch.compile the head's loss")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="longest epoch timed whole; longer ones are sampled and scaled (default 90 GPU, 20 CPU)")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of the stock/new step comparison")
    ap.add_argument("--compare-steps", type=int, default=None, help="steps per round (default 4 GPU, 2 CPU)")
    ap.add_argument("--no-epoch", action="store_true",
                    help="skip the epochs through `fit`: an epoch is the new step's time x its steps")
    ap.add_argument("--clock", choices=list(CLOCK), default="wall",
                    help="step and re-encoding times: wall seconds, or this process's CPU seconds (a shared CPU at "
                         "--threads 1; the epochs through `fit` are wall time, so with --no-epoch)")
    ap.add_argument("--reencode-batch", type=int, default=None, help="default 256 on a GPU, 8 on a CPU")
    ap.add_argument("--reencode-steps", type=int, default=None, help="batches timed (default 20 GPU, 2 CPU)")
    return ap.parse_args()


def main() -> None:
    global clock
    args = arguments()
    clock = CLOCK[args.clock]
    dev, gpu = args.device, args.device.startswith("cuda")
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = TINY if args.tiny else Shape()
    batches = args.batch or ([8] if args.tiny else [64, 1024] if gpu else [64])
    if args.images or not (gpu or args.tiny):  # a CPU holds no 34 GB stand-in
        shape = Shape(**{**shape.__dict__, "images": args.images or 1024})
    precision = args.precision or ("bf16" if gpu else "fp32")
    if gpu:
        torch.set_float32_matmul_precision("high")  # fp32 runs use TF32, as GPU training does
    res: dict[str, object] = {
        "bench": "train_gpu", "device": torch.cuda.get_device_name(dev) if gpu else "cpu", "torch": torch.__version__,
        "threads": torch.get_num_threads(), "pairs": shape.pairs, "images": shape.images,
        "image_tokens": shape.image_tokens, "text_tokens": list(shape.text_tokens), "dim": shape.dim,
        "batch_sizes": batches, "precision": precision, "compile": args.compile, "clock": args.clock}
    t0 = time.perf_counter()
    data = coco_standin(shape, dev)
    sync(dev)
    res["generate_s"] = round(time.perf_counter() - t0, 1)
    res["stores_gib"] = round(sum(v.tokens.numel() * 2 for v in data.views) / 2**30, 2)
    print(f"stand-in: {shape.pairs:,} pairs ({shape.images:,} images x {shape.captions}), {res['stores_gib']} GiB "
          f"of fp16 tokens on {dev}, generated in {res['generate_s']} s", flush=True)
    rates = step_rates(data, shape, dev, batches[0], precision, args.repeats, args.compare_steps or (4 if gpu else 2))
    head_flops = head_flops_per_pair(data, shape, dev, batches[0])
    res["head_step_gflop_per_pair"] = round(head_flops / 1e9, 4)
    res.update({f"{k}_step_s": round(v, 5) for k, v in rates.items()})
    res["new_vs_stock_step_speedup"] = round(rates["stock"] / rates["new"], 3)
    print(f"batch {batches[0]} step: stock {rates['stock'] * 1e3:.2f} ms, new {rates['new'] * 1e3:.2f} ms", flush=True)
    epochs = {}
    for b in batches:
        steps = len(data) // b
        if args.no_epoch:
            epoch_s, timed = rates["new"] * steps, 0
        else:
            epoch_s, timed = epoch_seconds(data, shape, dev, b, precision, args.compile,
                                           args.budget_s or (90.0 if gpu else 20.0))
        res.update({f"b{b}_epoch_s": round(epoch_s, 2), f"b{b}_epoch_steps": steps, f"b{b}_epoch_steps_timed": timed})
        print(f"batch {b}: epoch {epoch_s:.2f} s ({timed} of {steps} steps timed)", flush=True)
        epochs[f"b{b}"] = epoch_s
    epochs["stock"] = epochs[f"b{batches[0]}"] * rates["stock"] / rates["new"]  # the same loop, the stock step
    enc = reencode(shape, dev, precision, args.reencode_batch or (256 if gpu else 8),
                   args.reencode_steps or (20 if gpu else 2))
    res["reencode_models"] = enc["source"]
    res.update({f"reencode_{k}_ms_per_item": round(enc[f"{k}_s"] * 1e3, 4) for k in ("image", "text")})
    res.update({f"reencode_{k}_gflop_per_item": round(enc[f"{k}_flops"] / 1e9, 3) for k in ("image", "text")})
    speedups(res, enc["image_s"] + enc["text_s"], enc["image_flops"] + enc["text_flops"], head_flops, epochs,
             shape.pairs)
    res["epoch_s"] = res[f"b{batches[0]}_epoch_s"]
    res["goal_epoch_60s"] = min(epochs[f"b{b}"] for b in batches) < 60
    res["best_speedup_vs_bound"] = max(res[f"b{b}_speedup_vs_bound"] for b in batches)
    res["goal_speedup_vs_bound_0.75"] = res["best_speedup_vs_bound"] >= 0.75
    table(res, batches)
    print(json.dumps(res))


def table(res: dict[str, object], batches: list[int]) -> None:
    print(f"{'head step':30s} {'epoch s':>9s} {'head GFLOP/s':>13s} {'cache speedup':>14s} {'bound':>7s} {'ratio':>6s}")
    rows = [("stock", f"stock layer, batch {batches[0]}")] + [(f"b{b}", f"new, batch {b}") for b in batches]
    for key, label in rows:
        seconds = res.get(f"{key}_epoch_s") or res[f"b{batches[0]}_epoch_s"] * res["new_vs_stock_step_speedup"]
        print(f"{label:30s} {seconds:9.2f} {res[key + '_head_gflop_per_s']:13.1f} "
              f"{res[key + '_cache_speedup_tokens']:13.2f}x {res['arith_speedup_tokens']:6.2f}x "
              f"{res[key + '_speedup_vs_bound']:6.3f}")
    print(f"re-encoding ({res['reencode_models']}): {res['reencode_gflop_per_s']} GFLOP/s, epoch "
          f"{res['reencode_epoch_s']} s; {res['pairs']:,} pairs, {res['precision']}"
          f"{', compiled' if res['compile'] else ''}; goals: epoch < 60 s {res['goal_epoch_60s']}, "
          f"speedup >= 0.75 of the bound {res['goal_speedup_vs_bound_0.75']}")


if __name__ == "__main__":
    main()
