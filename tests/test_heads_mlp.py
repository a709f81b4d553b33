"""MLP / PCA / attention classifier heads and their trainer (fit_classifier), on small real stores written here.

`make_task_stores` (also used by test_clfa.py and test_late_fusion.py) writes an image store and a caption
store with learnable structure that needs both modalities:
- "single" (3 classes): the image tells class 0 from {1, 2} well and 1 from 2 only weakly; the captions tell
  class 2 from {0, 1} and nothing else. Image alone ~0.8, text alone ~0.67, both ~1.0.
- "multi" (4 labels): the image carries labels 0-2 (and 3 faintly), the captions labels 2-3.
Captions link to their image (2 per image), or share the image's id (`shared_ids`, like MVSA posts).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from embedcache.fusion.classify import fit_classifier, load_labelled, pca_sweep, predict_proba
from embedcache.fusion.heads import HEADS
from embedcache.fusion.heads.base import HeadSpec, create_head
from embedcache.fusion.heads.mlp import AttentionMLPHead, ClassifierHead, classifier_names, fit_pca, npairs_loss
from embedcache.fusion.jobs import job_from
from embedcache.paths import store_path
from embedcache.store import ShardData, StoreWriter

SIZES = {"train": 240, "val": 90, "test": 120}
# Every registered classifier head (a new one is tested for free); MLP_HEADS: those of the mlp family.
CLASSIFIERS = [n for n in HEADS.names() if issubclass(HEADS.get(n), ClassifierHead)]
MLP_HEADS = [n for n in CLASSIFIERS if HEADS.get(n).__module__ == ClassifierHead.__module__]
INPUTS = ("text", "image", "teacher-text", "teacher-image")  # the input order of cross-attention and clfa
FAST = {"epochs": 25, "batch_size": 64, "lr": 3e-3, "early_stop_patience": 5, "progress": False}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- generated stores


def _labels(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "single":
        return rng.integers(0, 3, n)
    y = (rng.random((n, 4)) < 0.4).astype(np.uint8)
    y[y.sum(1) == 0, rng.integers(0, 4)] = 1  # every item has at least one label
    return y


def _means(kind: str, y: np.ndarray, img_c: np.ndarray, txt_c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Latent means of images (n, L) and captions (n, L) from labels."""
    if kind == "single":
        return img_c[y], txt_c[y]
    img_w = np.array([1.0, 1.0, 1.0, 0.25])  # the image hardly sees label 3
    txt_w = np.array([0.0, 0.0, 1.0, 1.0])  # the captions see labels 2 and 3 only
    return (y * img_w) @ img_c, (y * txt_w) @ txt_c


def _write(path: Path, attrs: dict, splits: dict[str, dict]) -> Path:
    with StoreWriter(path, attrs, force=True) as writer:
        for split, a in splits.items():
            writer.write_shard(split, 0, ShardData(**a))
            writer.finish_split(split, 1)
    return path


def _tokens(pooled: np.ndarray, lengths: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    rows = [v + 0.3 * rng.standard_normal((n, len(v))) for v, n in zip(pooled, lengths, strict=True)]
    return np.asarray(lengths, np.int64), np.concatenate(rows).astype(np.float32)


def make_task_stores(data_dir: Path, kind: str = "single", *, dataset: str = "task", captions: int = 2,
                     shared_ids: bool = False, tokens: bool = False, teachers: bool = False, seed: int = 0,
                     image_dim: int = 24, text_dim: int = 16, teacher_dim: int = 8, sizes: dict | None = None,
                     shuffle_text: bool = False) -> dict[str, Path]:
    """Write `<dataset>/{image,text}.h5` (and `teacher-{image,text}.h5`) under data_dir/stores; see module doc."""
    rng = np.random.default_rng(seed)
    layout = np.random.default_rng(1000)  # class geometry fixed across seeds: only the items change
    latent = 6
    img_c = layout.standard_normal((3 if kind == "single" else 4, latent)) * 2.5
    txt_c = layout.standard_normal(img_c.shape) * 2.5
    if kind == "single":
        img_c[2] = img_c[1] + 0.9 * layout.standard_normal(latent) / np.sqrt(latent)  # 1 vs 2: weak in images
        txt_c[1] = txt_c[0]  # 0 vs 1: invisible in captions
    a_img, a_txt = layout.standard_normal((latent, image_dim)), layout.standard_normal((latent, text_dim))
    teach_c = layout.standard_normal((img_c.shape[0], teacher_dim)) * 2.0
    classes = [f"class{c}" for c in range(img_c.shape[0])]
    splits: dict[str, dict[str, dict]] = {k: {} for k in ("image", "text", "teacher-image", "teacher-text")}
    for split, n in (sizes or SIZES).items():
        y = _labels(kind, n, rng)
        m_img, m_txt = _means(kind, y, img_c, txt_c)
        ids = [f"{split}-img{i:04d}" for i in range(n)]
        img = ((m_img + rng.standard_normal((n, latent))) @ a_img).astype(np.float32)
        per = 1 if shared_ids else captions
        parent = np.repeat(np.arange(n), per)
        txt = ((m_txt[parent] + rng.standard_normal((len(parent), latent))) @ a_txt).astype(np.float32)
        cap_ids = list(np.array(ids)[parent]) if shared_ids else [f"{split}-cap{i:05d}" for i in range(len(parent))]
        order = rng.permutation(len(parent)) if shuffle_text else np.arange(len(parent))
        links = [ids[p] for p in parent[order]]
        splits["image"][split] = {"ids": ids, "pooled": img, "labels": y}
        splits["text"][split] = {"ids": [cap_ids[i] for i in order], "pooled": txt[order], "labels": y[parent][order],
                                 "links": links}
        if tokens:
            img_len, img_tok = _tokens(img, np.full(n, 4), rng)
            txt_len, txt_tok = _tokens(txt[order], rng.integers(2, 6, len(parent)), rng)
            splits["image"][split].update(lengths=img_len, tokens=img_tok)
            splits["text"][split].update(lengths=txt_len, tokens=txt_tok)
        if teachers:
            t_mean = (y @ teach_c) if kind == "multi" else teach_c[y]
            t_img = (t_mean + 0.3 * rng.standard_normal((n, teacher_dim))).astype(np.float32)
            t_txt = (t_mean[parent] + 0.3 * rng.standard_normal((len(parent), teacher_dim))).astype(np.float32)[order]
            splits["teacher-image"][split] = {"ids": ids, "pooled": t_img, "labels": y}
            splits["teacher-text"][split] = {"ids": splits["text"][split]["ids"], "pooled": t_txt,
                                             "labels": y[parent][order], "links": links}
    out = {}
    for name, modality in (("image", "image"), ("text", "text"), ("teacher-image", "image"), ("teacher-text", "text")):
        if splits[name]:
            attrs = {"backbone": name, "modality": modality, "dataset": dataset, "classes": classes,
                     "label_kind": kind, "tokens": tokens and not name.startswith("teacher"), "dtype": "float32"}
            out[name] = _write(store_path(dataset, name, data_dir), attrs, splits[name])
    return out


@pytest.fixture(scope="module")
def single_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("single")
    make_task_stores(root, "single")
    return root


@pytest.fixture(scope="module")
def multi_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("multi")
    make_task_stores(root, "multi")
    return root


def _train(head: str, root: Path, backbones: tuple[str, ...], tmp: Path, **kw):
    settings = {"dataset": "task", "backbones": backbones, "data_dir": root, "runs_root": tmp / "runs", **FAST, **kw}
    return fit_classifier(job_from(head, settings))[""]


# ---------------------------------------------------------------- every head: shapes and gradients


def _input_sets(name: str) -> list[tuple[str, ...]]:
    """The stores a head is tested on, from its arity: each single store for one-input heads, else the fewest
    of INPUTS it takes (at least two: a fusion is tested fusing)."""
    lo, hi = HEADS.get(name).arity
    if hi == 1:
        return [("image",), ("text",)]
    return [INPUTS[: max(lo, 2)]]


@pytest.fixture(scope="module")
def teacher_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Stores with teacher stores beside them, for heads that take more than two inputs (clfa)."""
    dirs = {kind: tmp_path_factory.mktemp(f"teachers-{kind}") for kind in ("single", "multi")}
    for kind, root in dirs.items():
        make_task_stores(root, kind, teachers=True)
    return dirs


@pytest.mark.parametrize("kind", ["single", "multi"])
@pytest.mark.parametrize(("name", "backbones"), [(n, b) for n in CLASSIFIERS for b in _input_sets(n)])
def test_head_gives_logits_a_finite_loss_and_gradients(name: str, backbones: tuple[str, ...], kind: str,
                                                       single_dir: Path, multi_dir: Path,
                                                       teacher_dirs: dict[str, Path]) -> None:
    if name == "mlp-supcon" and kind == "multi":
        pytest.skip("mlp-supcon is single-label (tested to refuse multi-label below)")
    root = single_dir if kind == "single" else multi_dir
    if len(backbones) > 2:
        root = teacher_dirs[kind]
    data = load_labelled([store_path("task", b, root) for b in backbones], "train")
    classes = 3 if kind == "single" else 4
    head = create_head(HeadSpec.create(name, [v.dim for v in data.views], backbones, num_classes=classes,
                                       label_kind=kind))
    head.prepare(data)
    batch = data.batch(torch.arange(16))
    assert head.logits(batch).shape == (16, classes)
    probs = head.predict_proba(batch)
    assert torch.all((probs >= 0) & (probs <= 1))
    head.eval()  # no dropout: softmax over classes (single-label), an independent sigmoid per label (multi-label)
    with torch.no_grad():
        z = head.logits(batch).double()
        want = z.exp() / z.exp().sum(1, keepdim=True) if kind == "single" else 1 / (1 + (-z).exp())
        torch.testing.assert_close(head.predict_proba(batch).double(), want, atol=1e-5, rtol=1e-5)
    head.train()
    for phase in head.phases:
        head.set_phase(phase)
        head.zero_grad()
        loss = head.loss(batch)
        assert loss.ndim == 0 and torch.isfinite(loss)
        loss.backward()
        first = next(p for n, p in head.named_parameters() if n.endswith("weight"))
        if phase == "classify" and name == "mlp-supcon":
            first = head.classifier[0].weight
        assert first.grad is not None and first.grad.abs().sum() > 0


def test_registered_classifiers_include_every_mlp_head() -> None:
    assert set(MLP_HEADS) <= set(classifier_names())


# ---------------------------------------------------------------- learning


def test_concat_fusion_beats_each_single_modality(single_dir: Path, tmp_path: Path) -> None:
    acc = {h: _train(h, single_dir, b, tmp_path).metrics["test"]["acc"]
           for h, b in (("mlp-image", ("image",)), ("mlp-text", ("text",)), ("mlp-concat", ("image", "text")))}
    assert 0.6 < acc["mlp-image"] < 0.93, acc
    assert 0.5 < acc["mlp-text"] < 0.8, acc  # class 0 vs 1 is a coin flip from the captions
    assert acc["mlp-concat"] >= 0.93, acc
    assert acc["mlp-concat"] > max(acc["mlp-image"], acc["mlp-text"]) + 0.05, acc


def test_attention_fusion_learns_and_its_weights_are_a_distribution(single_dir: Path, tmp_path: Path) -> None:
    run = _train("mlp-attention", single_dir, ("image", "text"), tmp_path)
    assert run.metrics["test"]["acc"] >= 0.9, run.metrics["test"]
    head = run.load_head()
    assert isinstance(head, AttentionMLPHead)
    data = load_labelled([store_path("task", b, single_dir) for b in ("image", "text")], "test")
    head.logits(data.batch(torch.arange(10)))
    w = head.last_weights
    assert w.shape == (10, 2) and torch.allclose(w.sum(1), torch.ones(10)) and (w > 0).all()


def test_multilabel_concat_learns_and_reports_per_category_scores(multi_dir: Path, tmp_path: Path) -> None:
    concat = _train("mlp-concat", multi_dir, ("image", "text"), tmp_path).metrics["test"]
    image = _train("mlp-image", multi_dir, ("image",), tmp_path).metrics["test"]
    assert concat["f1_micro"] >= 0.85, concat["f1_micro"]
    assert concat["subset_acc"] > image["subset_acc"] + 0.05, (concat["subset_acc"], image["subset_acc"])
    assert {"f1/class3", "acc/class0", "f1_samples", "f1_macro"} <= set(concat)


def test_supcon_head_trains_in_two_phases_and_learns(single_dir: Path, tmp_path: Path) -> None:
    run = _train("mlp-supcon", single_dir, ("image",), tmp_path)
    phases = [row["phase"] for row in run.record["history"]]
    assert phases[0] == "contrastive" and phases[-1] == "classify"
    assert run.metrics["test"]["acc"] > 0.6
    assert "contrastive_best_epoch" in run.metrics["train"]


def test_supcon_refuses_multilabel() -> None:
    with pytest.raises(ValueError, match="single-label"):
        create_head(HeadSpec.create("mlp-supcon", [8], num_classes=4, label_kind="multi"))


def test_npairs_loss_equals_a_hand_computation() -> None:
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])  # normalised: rows 0 and 2 coincide
    labels = torch.tensor([0, 1, 0])
    # logits (t = 1): row 0 and 2 are [1, 0, 1], row 1 is [0, 1, 0]; targets [.5, 0, .5], [0, 1, 0], [.5, 0, .5]
    lse_a, lse_b = np.log(2 * np.e + 1), np.log(np.e + 2)
    expected = ((lse_a - 1) * 2 + (lse_b - 1)) / 3
    assert npairs_loss(z, labels, 1.0).item() == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------- PCA on training rows only


def _garbage_eval_splits(src: Path, dst: Path) -> None:
    """Copy the stores, then rewrite val and test with other vectors (the training split unchanged)."""
    make_task_stores(dst, "single")
    other = make_task_stores(dst / "other", "single", seed=7)
    for name in ("image", "text"):
        path = store_path("task", name, dst)
        from embedcache.store import open_store

        with open_store(path) as s:
            attrs = {k: v for k, v in s.attrs.items() if k not in ("fingerprint", "complete", "schema_version")}
            train = s.split("train")
            keep = {"ids": list(train.ids), "pooled": train.pooled(), "labels": train.labels,
                    "links": None if train.links is None else list(train.links)}
        splits = {"train": keep}
        with open_store(other[name]) as o:
            for split in ("val", "test"):
                sp = o.split(split)
                splits[split] = {"ids": list(sp.ids), "pooled": sp.pooled() * 5 + 3, "labels": sp.labels,
                                 "links": None if sp.links is None else list(sp.links)}
        os.remove(path)
        _write(path, attrs, splits)


def _pca_buffers(run) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in run.load_head().state_dict().items() if k.startswith("pca_")}


def test_pca_is_fitted_on_training_items_only(single_dir: Path, tmp_path: Path) -> None:
    from sklearn.decomposition import PCA

    run = _train("pca-concat", single_dir, ("image", "text"), tmp_path)
    assert run.metrics["test"]["acc"] >= 0.85, run.metrics["test"]  # 3 dims per modality still carry the classes
    buffers = _pca_buffers(run)
    for i, name in enumerate(("image", "text")):
        train = load_labelled([store_path("task", name, single_dir)], "train").views[0].pooled.numpy()
        ref = PCA(3).fit(train)
        np.testing.assert_allclose(buffers[f"pca_mean_{i}"], ref.mean_, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.abs(buffers[f"pca_axes_{i}"]), np.abs(ref.components_.T), atol=1e-4)
        test = load_labelled([store_path("task", name, single_dir)], "test").views[0].pooled.numpy()
        leaked = PCA(3).fit(np.concatenate([train, test]))
        assert not np.allclose(buffers[f"pca_mean_{i}"], leaked.mean_, atol=1e-3)
    # the same training split with garbage val/test vectors gives the very same PCA
    other = tmp_path / "garbage"
    _garbage_eval_splits(single_dir, other)
    again = _pca_buffers(_train("pca-concat", other, ("image", "text"), tmp_path / "b"))
    for key, value in buffers.items():
        np.testing.assert_array_equal(again[key], value)


def test_fused_pca_reduces_the_concatenation(single_dir: Path) -> None:
    data = load_labelled([store_path("task", b, single_dir) for b in ("image", "text")], "train")
    head = create_head(HeadSpec.create("pca-concat", [24, 16], num_classes=3, pca_on="fused", pca_dims=4))
    head.prepare(data)
    fused = torch.cat([v.pooled.index_select(0, data.rows[:, m]) for m, v in enumerate(data.views)], dim=1)
    mean, axes = fit_pca(fused, 4)
    assert torch.allclose(head.pca_axes_0.double(), axes.float().double(), atol=1e-5)
    assert head.features(data.batch(torch.arange(5))).shape == (5, 4)
    # against an independent PCA (sklearn; axes up to sign) of the joined training rows
    from sklearn.decomposition import PCA

    ref = PCA(4).fit(fused.double().numpy())
    np.testing.assert_allclose(head.pca_mean_0.numpy(), ref.mean_, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.abs(head.pca_axes_0.numpy()), np.abs(ref.components_.T), atol=1e-4)
    signs = np.sign((head.pca_axes_0.double().numpy() * ref.components_.T).sum(0))
    np.testing.assert_allclose(head.features(data.batch(torch.arange(5))).double().numpy(),
                               ref.transform(fused[:5].double().numpy()) * signs, rtol=1e-4, atol=1e-4)


def test_pca_sweep_trains_one_run_per_feasible_size(single_dir: Path, tmp_path: Path) -> None:
    job = job_from("pca-concat", {"dataset": "task", "backbones": ("image", "text"), "data_dir": single_dir,
                                  "runs_root": tmp_path, **{**FAST, "epochs": 2}})
    runs = pca_sweep(job, (2, 5, 17))
    assert [dict(r.record["head"]["options"])["pca_dims"] for r in runs] == [2, 5]  # 17 > the text store's 16
    assert runs[1].load_head().pca_axes_1.shape == (16, 5)


def test_pca_head_refuses_to_run_unfitted_and_bad_sizes(single_dir: Path) -> None:
    data = load_labelled([store_path("task", b, single_dir) for b in ("image", "text")], "train")
    head = create_head(HeadSpec.create("pca-concat", [24, 16], num_classes=3))
    with pytest.raises(RuntimeError, match="not fitted"):
        head.logits(data.batch(torch.arange(4)))
    with pytest.raises(ValueError, match="pca_dims must be in 1..16"):
        create_head(HeadSpec.create("pca-concat", [24, 16], num_classes=3, pca_dims=17))


# ---------------------------------------------------------------- joining, runs, errors


def test_modalities_join_by_id_not_row_position(tmp_path: Path) -> None:
    make_task_stores(tmp_path, "single", shuffle_text=True, sizes={"train": 30, "val": 10})
    data = load_labelled([store_path("task", b, tmp_path) for b in ("image", "text")], "train")
    img, txt = data.views
    rows = data.rows.numpy()
    assert len(rows) == 60 and not np.array_equal(rows[:, 0], np.repeat(np.arange(30), 2))  # really shuffled
    assert list(txt.links[rows[:, 1]]) == list(img.ids[rows[:, 0]])
    np.testing.assert_array_equal(data.labels.numpy(), img.labels[rows[:, 0]])


def test_run_reloads_identically_and_is_reused(single_dir: Path, tmp_path: Path) -> None:
    run = _train("mlp-concat", single_dir, ("image", "text"), tmp_path, epochs=3)
    data = load_labelled([store_path("task", b, single_dir) for b in ("image", "text")], "val")
    head = run.load_head()
    probs = predict_proba(head, data)
    assert probs.shape == (len(data), 3)
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert run.record["head"]["options"] and dict(run.record["head"]["options"])["num_classes"] == 3
    # the reloaded weights are the ones the recorded metrics were measured with (accuracy counted here)
    labels = data.labels.numpy()
    assert float((probs.argmax(1) == labels).mean()) == pytest.approx(run.metrics["val"]["acc"])
    test = load_labelled([store_path("task", b, single_dir) for b in ("image", "text")], "test")
    test_probs = predict_proba(run.load_head(), test)
    assert float((test_probs.argmax(1) == test.labels.numpy()).mean()) == pytest.approx(run.metrics["test"]["acc"])
    again = _train("mlp-concat", single_dir, ("image", "text"), tmp_path, epochs=3)
    assert again.id == run.id and again.record["created"] == run.record["created"]


def test_train_classifier_refuses_alignment_heads_and_unknown_options(single_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a classifier"):
        _train("cbmf-add", single_dir, ("image", "text"), tmp_path)
    with pytest.raises(ValueError, match="not understood"):
        _train("mlp-concat", single_dir, ("image", "text"), tmp_path, options={"hiden": (4,)})
    with pytest.raises(ValueError, match="exactly 1 input"):
        create_head(HeadSpec.create("mlp-text", [4, 4], num_classes=2))


@pytest.mark.slow
def test_concat_on_real_shapes_stores_if_extracted(tmp_path: Path) -> None:
    """On the real offline stores (`make demo`), when they exist: the fused head beats chance by far."""
    root = Path(os.environ.get("EMBEDCACHE_DATA_DIR") or "data")
    if not all(store_path("shapes-demo", b, root).exists() for b in ("effnet-lite0", "minilm")):
        pytest.skip("no extracted shapes-demo stores (run `make demo`)")
    run = fit_classifier(job_from("mlp-concat", {"dataset": "shapes-demo", "data_dir": root, "runs_root": tmp_path,
                                                 "progress": False, "epochs": 30}))[""]
    assert run.metrics["test"]["acc"] > 0.3  # 10 classes of hard scenes: three times chance
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_fit_pca_in_row_blocks_matches_sklearn(monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.decomposition import PCA

    from embedcache.fusion.heads import mlp

    x = torch.randn(203, 6, generator=torch.Generator().manual_seed(3)) * torch.tensor([5.0, 3, 2, 1, 0.5, 0.1]) + 7
    monkeypatch.setattr(mlp, "PCA_BLOCK_ROWS", 17)  # 12 blocks and a ragged last one
    mean, axes = mlp.fit_pca(x, 3)
    ref = PCA(3).fit(x.double().numpy())
    assert np.allclose(mean.numpy(), ref.mean_)
    assert np.allclose(np.abs(axes.numpy().T @ ref.components_.T), np.eye(3), atol=1e-8)  # same axes up to sign
