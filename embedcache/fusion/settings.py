"""Training settings: which dataset, stores and pairing a head uses when the command names none.

Every setting is plain data registered here, in one place, so `SETTINGS.get(name)` works whatever module was
imported first (a head names its default setting through `Head.setting_for`; late fusion through
`embedcache.fusion.late_fusion.DEFAULT_SETTING`). The offline settings use the generated `shapes` data
(effnet-lite0 images, MiniLM/MPNet captions); the papers' stores are named by the pipelines.
"""

from __future__ import annotations

from dataclasses import dataclass

from embedcache.registry import Registry


@dataclass(frozen=True)
class SettingSpec:
    """A training setting: which stores a head aligns and how their rows pair up by default."""

    name: str
    dataset: str
    backbones: tuple[str, ...]
    pairing: str  # a pairings.PAIRINGS name, or "mined" (pairs from embedcache.fusion.mining)
    miner: str | None = None  # backbone of the store the pairs are mined from
    threshold: float = 0.7
    description: str = ""


SETTINGS: Registry[SettingSpec] = Registry("training setting")

for _spec in (
    # alignment (CBMF, ConVIRT)
    SettingSpec("text-image", "shapes", ("effnet-lite0", "minilm"), "links",
                description="CBMF text-image, offline: images and their captions of the generated `shapes` data"),
    SettingSpec("text-text", "shapes", ("minilm", "mpnet"), "mined", miner="minilm", threshold=0.7,
                description="CBMF text-text, offline: caption pairs with MiniLM cosine >= 0.7, MiniLM x MPNet"),
    # classification
    SettingSpec("shapes-classify", "shapes", ("effnet-lite0", "minilm"), "multi-links",
                description="classification on `shapes`: image + caption stores, the image's class"),
    SettingSpec("shapes-text", "shapes", ("minilm",), "multi-links",
                description="classification on `shapes` from the caption store alone"),
    SettingSpec("shapes-image", "shapes", ("effnet-lite0",), "multi-links",
                description="classification on `shapes` from the image store alone"),
    SettingSpec("shapes-text-image", "shapes", ("minilm", "effnet-lite0"), "multi-links",
                description="cross-attention and late fusion on `shapes`: caption and image stores"),
    SettingSpec("shapes-clfa", "shapes", ("minilm", "effnet-lite0", "teacher-text", "teacher-image"), "multi-links",
                description="CLFA on `shapes`; no CLIP offline, so the teacher is an aligned CBMF head's output: "
                            "`write_head_stores(<a cbmf-add run>, names=('teacher-image', 'teacher-text'))`"),
    # the papers' stores (the pipelines name them; extract them first with `embedcache extract`)
    SettingSpec("coco-multilabel", "coco", ("resnet152", "bert"), "multi-links",
                description="BERT + ResNet-152 on COCO's 80 categories (multi-label)"),
    SettingSpec("mmsd-clfa", "mmsd", ("bert", "vit", "clip-text", "clip-image"), "multi-links",
                description="CLFA on MMSD: BERT and ViT tokens, CLIP ViT-B/32 text/image embeddings as teacher"),
    SettingSpec("mvsa-single-late", "mvsa-single", ("twitter-roberta", "resnet50"), "multi-links",
                description="late fusion on MVSA-Single: Twitter RoBERTa text, ResNet-50 image"),
):
    SETTINGS.register(_spec.name, _spec)
