"""An image backbone's eval preprocessing as plain data, applied with torch ops on any device.

The PIL path (`Encoder.image_transform`) runs in worker processes on decoded PIL images. This is the same
recipe for uint8 tensors that are already decoded, on the device where they were decoded (nvJPEG on CUDA):
resize the shortest side (or squash to a fixed size) with the config's interpolation and antialiasing,
center crop, scale to [0, 1], normalise. Each encoder reads the numbers from its own config (timm's
resolve_data_config, CLIP's preprocessor_config.json), so both paths share one source. Resizing a uint8
tensor rounds back to uint8 as PIL does; the remaining differences (antialias kernels, JPEG IDCT) are small
and are measured by `embedcache.extract.gpu_decode.compare_decode_paths`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

# how a center crop's offset is rounded: torchvision's CenterCrop (timm) rounds half to even, transformers floors
CropRounding = Literal["round", "floor"]


@dataclass(frozen=True)
class TensorPreprocess:
    """Resize, center crop and normalise of one backbone, as data (hashable; enters no fingerprint itself)."""

    resize: tuple[int, ...]  # (s,): shortest side to s, aspect kept; (h, w): squash to exactly h x w
    interpolation: str  # torchvision InterpolationMode value: bicubic, bilinear, nearest, ...
    crop: tuple[int, int]  # (h, w) of the center crop
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_rounding: CropRounding = "round"


def from_timm_config(cfg: dict[str, Any]) -> TensorPreprocess | None:
    """timm's eval transform (transforms_imagenet_eval) for a resolved data config; None for the modes it does not
    cover here (border cropping, trimmed borders, a center crop of a non-square image size)."""
    _, h, w = cfg["input_size"]
    mode = cfg.get("crop_mode") or "center"
    pct = cfg.get("crop_pct") or 0.875
    if cfg.get("crop_border_pixels") or mode not in ("center", "squash") or (mode == "center" and h != w):
        return None
    scale = (math.floor(h / pct),) if mode == "center" else (math.floor(h / pct), math.floor(w / pct))
    return TensorPreprocess(scale, cfg.get("interpolation") or "bilinear", (h, w), _three(cfg["mean"]),
                            _three(cfg["std"]))


def from_clip_processor(cfg: dict[str, Any], pil_modes: dict[int, str]) -> TensorPreprocess:
    """CLIP's image processor config (preprocessor_config.json as a dict): shortest edge, crop with
    transformers' floor offsets, image_mean/std. `pil_modes` maps PIL resample codes to interpolation names."""
    crop = cfg["crop_size"]
    return TensorPreprocess((int(cfg["size"]["shortest_edge"]),), pil_modes[cfg["resample"]],
                            (int(crop["height"]), int(crop["width"])), _three(cfg["image_mean"]),
                            _three(cfg["image_std"]), crop_rounding="floor")


def _three(values: Any) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return a, b, c


def resize_crop(image: torch.Tensor, prep: TensorPreprocess) -> torch.Tensor:
    """(C, H, W) uint8 with C in {1, 3}, on any device -> (3, crop_h, crop_w) uint8 on the same device."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    if image.shape[0] == 1:  # grayscale: RGB as PIL's convert("RGB") makes it (three equal channels)
        image = image.expand(3, -1, -1)
    # uint8 in, uint8 out: rounded and clamped like PIL's resize of an 8-bit image
    image = F.resize(image, list(prep.resize), interpolation=InterpolationMode(prep.interpolation), antialias=True)
    return _center_crop(image, prep.crop, prep.crop_rounding)


def normalise(batch: torch.Tensor, prep: TensorPreprocess) -> torch.Tensor:
    """(B, 3, h, w) uint8 -> float32 scaled to [0, 1] and normalised by the config's mean and std (one op per
    batch, not per image: on CUDA each small tensor made here is a host-to-device copy)."""
    mean = torch.tensor(prep.mean, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, device=batch.device).view(1, 3, 1, 1)
    return (batch.float() / 255.0 - mean) / std


def preprocess_batch(images: list[torch.Tensor], prep: TensorPreprocess) -> torch.Tensor:
    """Decoded images of any sizes (each (C, H, W) uint8, C in {1, 3}) -> (B, 3, crop_h, crop_w) float32, on
    their device."""
    return normalise(torch.stack([resize_crop(im, prep) for im in images]), prep)


def _center_crop(image: torch.Tensor, size: tuple[int, int], rounding: CropRounding) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as F

    if rounding == "round":
        return F.center_crop(image, list(size))
    h, w = size
    top, left = (image.shape[-2] - h) // 2, (image.shape[-1] - w) // 2
    if top < 0 or left < 0:  # smaller than the crop: never after a shortest-side resize to >= the crop
        return F.center_crop(image, list(size))
    return image[..., top:top + h, left:left + w]
