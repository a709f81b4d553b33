"""Stage two: fusion heads trained from the stores, never from the backbones.

views (store splits as tensors, joined by id into PairData) -> heads (registered families) + losses ->
train (one loop, `fit`) -> runs (one JSON + checkpoint per run) -> tasks (evaluations applied to runs).
classify and late_fusion train classifier heads and late-fusion weightings; mining mines caption pairs;
export writes a trained head's outputs back as a store. Nothing here imports datasets, backbones, extract,
transformers or timm (tests/test_stage_two_imports.py).
"""
