"""Training from real (toy) stores end to end: learning, early stopping, runs, reproducibility, tasks, embed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from _stage2_fixtures import fit_one, make_toy_stores

from embedcache.fusion.export import ExportCfg, embed, encode_view
from embedcache.fusion.heads import HeadSpec, create_head
from embedcache.fusion.pairings import join
from embedcache.fusion.tasks import evaluate_run
from embedcache.fusion.train import StoresMissingError, TrainCfg, fit
from embedcache.fusion.views import load_view, view_from_arrays
from embedcache.store import open_store

SMALL = {"dim": 64, "ff_dim": 256}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory):
    return make_toy_stores(tmp_path_factory.mktemp("train"))


@pytest.fixture(scope="module")
def run(toy):
    return fit_one("cbmf-add", dataset="toy", backbones=("image", "text-a"), data_dir=toy.data_dir, epochs=8,
                 options=SMALL, progress=False, runs_root=toy.data_dir / "runs")


def test_missing_stores_name_the_extract_commands(tmp_path: Path) -> None:
    with pytest.raises(StoresMissingError) as err:
        fit_one("cbmf-add", data_dir=tmp_path, progress=False)
    message = str(err.value)
    assert f"embedcache extract shapes --model effnet-lite0 --data-dir {tmp_path}" in message
    assert "embedcache extract shapes --model minilm" in message


def test_cbmf_add_learns_image_text_retrieval(run, toy) -> None:
    metrics = evaluate_run(run, "retrieval", data_dir=toy.data_dir, hit_ks=(100,))
    # 60 test images with 3 captions each: chance R@1 is 1/60 (text->image) and 3/180 (image->text).
    assert metrics["text_to_image_R@1"] > 0.3 and metrics["image_to_text_R@1"] > 0.3
    recorded = json.loads((run.dir / "run.json").read_text())["metrics"]["retrieval"]
    assert recorded["text_to_image_R@1"] == pytest.approx(metrics["text_to_image_R@1"])


def test_the_authors_fig4_protocol_queries_every_caption_over_one_image_row_per_caption(run, toy) -> None:
    metrics = evaluate_run(run, "retrieval-rows", data_dir=toy.data_dir, split="test", hit_ks=(100, 180, 200))
    info = json.loads((run.dir / "run.json").read_text())["evals"]["retrieval-rows"]
    rows = {b: len(load_view(toy.paths[b], "test")) for b in ("image", "text-a")}  # the stores' own counts
    assert (info["captions"], info["gallery_rows"], info["images"]) == (rows["text-a"], rows["text-a"], rows["image"])
    assert (info["captions"], info["gallery_rows"], info["images"]) == (180, 180, 60)
    # the caption's own row ties with its image's 2 other rows, which rank above it: rank >= 3
    assert metrics["text_to_image_rows_R@1"] == 0.0 and metrics["text_to_image_rows_R@5"] > 0.3
    assert "text_to_image_rows_hit@100" in metrics and "text_to_image_rows_hit@180" not in metrics


def test_text_text_mines_with_minilm_by_default_not_the_first_input(toy) -> None:
    # The paper mines with all-MiniLM-L6-v2 whatever the aligned backbones are; toy has no minilm store.
    with pytest.raises(StoresMissingError, match="embedcache extract toy --model minilm"):
        fit_one("cbmf-additive", dataset="toy", backbones=("text-a", "text-b"), data_dir=toy.data_dir, epochs=1,
                options=SMALL, progress=False, runs_root=toy.data_dir / "runs")


def test_text_text_cbmf_additive_beats_the_raw_stores(toy) -> None:
    # Text-text: captions of the same image with miner cosine >= threshold, both orders, plus self pairs.
    run = fit_one("cbmf-additive", dataset="toy", backbones=("text-a", "text-b"), data_dir=toy.data_dir, epochs=8,
                  threshold=0.7, miner="text-a", options=SMALL, progress=False, runs_root=toy.data_dir / "runs")
    info = run.record["pairs"]["train"]
    assert info["pairing"] == "mined" and info["scope"] == "image" and info["miner"].endswith("text-a.h5")
    assert info["mined_pairs"] > 20 and info["rows"] > 2 * info["mined_pairs"]  # both orders + (c, c)
    m = evaluate_run(run, "sts", data_dir=toy.data_dir)
    assert m["sts_spearman"] > max(m["raw_text-a_sts_spearman"], m["raw_text-b_sts_spearman"]) + 0.04


def test_run_record_names_everything_it_used(run, toy) -> None:
    rec = run.record
    with open_store(toy.paths["image"]) as s:
        assert rec["inputs"][0]["fingerprint"] == s.fingerprint
    assert [i["backbone"] for i in rec["inputs"]] == ["image", "text-a"]
    assert rec["head"]["name"] == "cbmf-add" and rec["head_cfg"]["targets"] == "hard"
    assert rec["train"]["batch_size"] == 64 and rec["seed"] == 0
    assert rec["metrics"]["train"]["best_epoch"] >= 1 and len(rec["history"]) == rec["metrics"]["train"]["epochs_run"]
    assert rec["timings"]["train_s"] > 0 and rec["versions"]["embedcache"]
    assert {"train_loss", "val_loss", "lr", "logit_scale", "items_per_s"} <= set(rec["history"][0])
    assert (run.dir / "head.safetensors").exists() and run.id.startswith("cbmf-add-")


def test_same_inputs_same_run_and_seeds_reproduce(run, toy) -> None:
    kwargs = dict(dataset="toy", backbones=("image", "text-a"), data_dir=toy.data_dir, epochs=8, options=SMALL,
                  progress=False, runs_root=toy.data_dir / "runs")
    again = fit_one("cbmf-add", **kwargs)
    assert again.id == run.id and again.record["created"] == run.record["created"]  # found, not retrained
    retrained = fit_one("cbmf-add", force=True, **kwargs)
    assert [h["val_loss"] for h in retrained.record["history"]] == [h["val_loss"] for h in run.record["history"]]
    other = fit_one("cbmf-add", **{**kwargs, "epochs": 2}, seed=1)
    assert other.id != run.id
    assert other.record["history"][0]["train_loss"] != run.record["history"][0]["train_loss"]


def test_checkpoint_reloads_the_same_head(run, toy) -> None:
    view = load_view(toy.paths["image"], "test")
    a = encode_view(run.load_head(), 0, view)
    b = encode_view(run.load_head(), 0, view)
    assert torch.equal(a, b) and a.shape == (60, 64)
    fresh = create_head(run.head_spec)
    assert not torch.allclose(encode_view(fresh, 0, view), a)


def _tiny_data(n: int, seed: int):
    g = np.random.default_rng(seed)
    a = view_from_arrays([str(i) for i in range(n)], g.standard_normal((n, 6)))
    b = view_from_arrays([str(i) for i in range(n)], g.standard_normal((n, 4)))
    return join([a, b], "ids")


def test_early_stopping_keeps_the_best_epoch() -> None:
    torch.manual_seed(0)
    head = create_head(HeadSpec.create("convirt-frozen", (6, 4), dim=8))
    cfg = TrainCfg(epochs=50, batch_size=16, lr=0.0, early_stop_patience=3)  # lr 0: the val loss never improves
    result = fit(head, _tiny_data(64, 0), _tiny_data(32, 1), cfg)
    assert len(result.history) == 4 and result.stopped_early and result.best_epoch == 1


def test_plateau_schedule_lowers_the_learning_rate() -> None:
    torch.manual_seed(0)
    head = create_head(HeadSpec.create("convirt-frozen", (6, 4), dim=8))
    # lr 1e-6: the val loss moves by far less than the scheduler's 1e-4 relative threshold each epoch
    cfg = TrainCfg(epochs=4, batch_size=16, lr=1e-6, plateau_patience=0, plateau_factor=0.5, early_stop_patience=9)
    lrs = [h["lr"] for h in fit(head, _tiny_data(64, 0), _tiny_data(32, 1), cfg).history]
    assert lrs == pytest.approx([1e-6, 1e-6, 5e-7, 2.5e-7])  # epoch 1 improves on nothing: no cut


def test_val_split_missing_holds_out_whole_images(tmp_path: Path) -> None:
    toy = make_toy_stores(tmp_path, sizes={"train": 80, "test": 20})
    run = fit_one("convirt-frozen", dataset="toy", backbones=("image", "text-a"), data_dir=tmp_path, epochs=1,
                progress=False, runs_root=tmp_path / "runs")
    val = run.record["pairs"]["val"]
    assert val["held_out_from"] == "train" and 0 < val["rows"] < 240 and val["rows"] % 3 == 0
    assert toy.paths["image"].exists()
    # the same holdout, redone: every image's 3 captions on one side only, and the sides cover the split
    from embedcache.fusion.train import holdout

    data = join([load_view(toy.paths["image"], "train"), load_view(toy.paths["text-a"], "train")], "links")
    fit_rows, val_rows = holdout(data, 0.1, 0)
    assert len(val_rows) == val["rows"] and len(fit_rows) + len(val_rows) == len(data) == 240
    fit_images, val_images = fit_rows.rows[:, 0].tolist(), val_rows.rows[:, 0].tolist()
    assert not set(fit_images) & set(val_images)
    assert all(val_images.count(i) == 3 for i in set(val_images))


def test_token_inputs_and_soft_targets_train(tmp_path: Path) -> None:
    make_toy_stores(tmp_path, sizes={"train": 40, "val": 20}, tokens=True)
    run = fit_one("cbmf-dot", dataset="toy", backbones=("image", "text-a"), data_dir=tmp_path, epochs=1, tokens=True,
                targets="soft", options=SMALL, batch_size=16, progress=False, runs_root=tmp_path / "runs")
    assert [i["tokens"] for i in run.inputs] == [True, True]
    assert run.record["head_cfg"]["targets"] == "soft" and np.isfinite(run.record["history"][0]["val_loss"])


def test_tokens_larger_than_the_ram_budget_are_streamed_through_training(tmp_path: Path) -> None:
    make_toy_stores(tmp_path, sizes={"train": 120, "val": 30, "test": 30}, tokens=True)
    common = dict(dataset="toy", backbones=("image", "text-a"), data_dir=tmp_path, epochs=8, tokens=True,
                  options=SMALL, batch_size=16, progress=False, runs_root=tmp_path / "runs")
    streamed = fit_one("cbmf-add", ram_budget=8_000, **common)  # 46 KB of image tokens, 90 KB of caption tokens
    whole = fit_one("cbmf-add", **common)
    assert all(i["streamed_window_bytes"] == 4_000 for i in streamed.inputs)
    assert not any(i["streamed_window_bytes"] for i in whole.inputs) and streamed.id != whole.id
    for run in (streamed, whole):  # streamed evaluation too: the test split is read block by block
        m = evaluate_run(run, "retrieval", data_dir=tmp_path, hit_ks=(100,), ram_budget=8_000)
        assert m["text_to_image_R@1"] > 0.25  # chance: 1/30


def test_embed_writes_a_reusable_store(run, toy) -> None:
    path = embed(run, store=toy.paths["image"], data_dir=toy.data_dir)
    assert path.name == f"run_{run.id}_image.h5"
    with open_store(path) as s, open_store(toy.paths["image"]) as src:
        assert s.attrs["run_id"] == run.id and s.attrs["source_fingerprint"] == src.fingerprint
        assert s.splits == src.splits and s.split("test").dim == 64
        assert list(s.split("test").ids) == list(src.split("test").ids)
        assert np.array_equal(s.split("test").labels, src.split("test").labels)
        expected = encode_view(run.load_head(), 0, load_view(toy.paths["image"], "test")).numpy()
        assert np.allclose(s.split("test").pooled(), expected, atol=1e-6)
    stamp = os.stat(path).st_mtime_ns
    assert embed(run, store=toy.paths["image"], data_dir=toy.data_dir) == path
    assert os.stat(path).st_mtime_ns == stamp  # complete store of the same fingerprint: kept
    with pytest.raises(ValueError, match="takes 32-d vectors but the store holds 40-d"):
        embed(run, store=toy.paths["text-b"], data_dir=toy.data_dir, cfg=ExportCfg(out=toy.data_dir / "x.h5"))


def test_classification_tasks_run_and_are_recorded(run, toy) -> None:
    zs = evaluate_run(run, "zero-shot", data_dir=toy.data_dir)
    assert zs["zeroshot_top1"] > 3 / 8 and zs["zeroshot_top5"] >= zs["zeroshot_top1"]  # 8 classes: chance 1/8
    probe = evaluate_run(run, "linear-probe", data_dir=toy.data_dir, epochs=10, log_at=(10,), lr=0.05, baseline=False)
    assert probe["probe_acc@10"] > 0.5
    ft = evaluate_run(run, "finetune", data_dir=toy.data_dir, epochs=2, log_at=(2,), baseline=False)
    assert 0.0 <= ft["finetune_acc@2"] <= 1.0
    # 8 classes, 60 test images: chance is 1/8 (+- 0.04); measured 0.33
    assert ft["finetune_acc@2"] > 2 / 8 and ft["finetune_top5@2"] >= ft["finetune_acc@2"]
    recorded = json.loads((run.dir / "run.json").read_text())
    assert {"zero-shot", "linear-probe", "finetune"} <= set(recorded["metrics"])
    assert recorded["evals"]["zero-shot"]["templates_per_class"] == 1


def test_pair_classification_chooses_its_threshold_off_test(run, toy) -> None:
    text_run = fit_one("convirt-frozen", dataset="toy", backbones=("text-a", "text-b"), data_dir=toy.data_dir,
                     pairing="ids", epochs=2, progress=False, runs_root=toy.data_dir / "runs")
    m = evaluate_run(text_run, "pair-classification", data_dir=toy.data_dir, label_threshold=3.0,
                     threshold_split="val")
    assert {"pairs_acc", "raw_text-a_pairs_acc", "raw_text-b_pairs_acc"} <= set(m)
    assert any("majority" in k for k in m)
    with open_store(toy.paths["text-a"]) as s:  # the floors from the test split's gold scores, counted here
        positive = float(np.mean(s.split("test").pairs[2] >= 3.0))
    for prefix in ("", "raw_text-a_", "raw_text-b_"):
        assert m[f"{prefix}pairs_all_positive_rate"] == pytest.approx(positive)
        assert m[f"{prefix}pairs_majority_acc"] == pytest.approx(max(positive, 1 - positive))
        assert m[f"{prefix}pairs_acc"] > m[f"{prefix}pairs_majority_acc"] + 0.1, prefix  # measured 0.83-0.86 vs 0.58
    with pytest.raises(ValueError, match="not the evaluated split"):
        evaluate_run(text_run, "pair-classification", data_dir=toy.data_dir, label_threshold=3.0,
                     threshold_split="test")
    with pytest.raises(ValueError, match="label_threshold"):
        evaluate_run(text_run, "pair-classification", data_dir=toy.data_dir, threshold_split="val")


def test_encode_view_of_some_rows_is_those_rows_of_the_whole(run, toy) -> None:
    view, head = load_view(toy.paths["image"], "test"), run.load_head()
    rows = np.array([5, 0, 5, 17, 3])  # unsorted, with a repeat
    assert torch.allclose(encode_view(head, 0, view, rows=rows), encode_view(head, 0, view)[rows], atol=1e-6)


def test_pair_threshold_chosen_on_a_seeded_sample_of_pairs(toy) -> None:
    text_run = fit_one("convirt-frozen", dataset="toy", backbones=("text-a", "text-b"), data_dir=toy.data_dir,
                       pairing="ids", epochs=2, progress=False, runs_root=toy.data_dir / "runs")
    with open_store(toy.paths["text-a"]) as s:
        val_pairs = len(s.split("val").pairs[2])
    options = {"data_dir": toy.data_dir, "label_threshold": 3.0, "threshold_split": "val"}
    evaluate_run(text_run, "pair-classification", **options)
    assert json.loads((text_run.dir / "run.json").read_text())["evals"]["pair-classification"][
        "threshold_pairs"] == val_pairs
    sampled = evaluate_run(text_run, "pair-classification", threshold_pairs=40, **options)
    assert json.loads((text_run.dir / "run.json").read_text())["evals"]["pair-classification"][
        "threshold_pairs"] == 40 < val_pairs
    assert sampled == evaluate_run(text_run, "pair-classification", threshold_pairs=40, **options)  # seeded
    assert sampled["pairs_acc"] > sampled["pairs_majority_acc"]  # a threshold from 40 pairs still separates


@pytest.mark.slow
def test_cbmf_add_on_real_shapes_stores(tmp_path: Path) -> None:
    """The offline text-image setting on the stores `make demo` makes (effnet-lite0 + minilm on `shapes-demo`:
    600 images of the hard difficulty)."""
    from embedcache.paths import store_path

    needed = [store_path("shapes-demo", b) for b in ("effnet-lite0", "minilm")]
    if not all(p.exists() for p in needed):
        pytest.skip(f"no shapes-demo stores at {needed}: run `make demo` first")
    run = fit_one("cbmf-add", dataset="shapes-demo", epochs=5, progress=False, runs_root=tmp_path)
    m = evaluate_run(run, "retrieval", hit_ks=(100,))
    images = run.record["evals"]["retrieval"]["images"]
    assert m["text_to_image_R@1"] > 3 / images  # three times chance (hard scenes: ~8x after 10 epochs)
