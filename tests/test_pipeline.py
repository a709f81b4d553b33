"""Pipelines: spec round trips, every shipped spec names registered things, reruns redo only what changed,
missing data gives a "not run" table, and a tiny demo pipeline runs end to end on real offline backbones."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from _stage2_fixtures import make_toy_stores

from embedcache.paths import Paths
from embedcache.tables.reference import pipelines_dir, read_toml
from embedcache.tables.runner import (
    ColumnSpec,
    EvalSpec,
    PipelineSpec,
    RowSpec,
    RunSpec,
    StoreSpec,
    dump_pipeline,
    list_pipelines,
    load_pipeline,
    run_all,
    run_pipeline,
    spec_from_dict,
    spec_to_dict,
)
from embedcache.tables.steps import Missing, extract_command, unregistered

SHIPPED = list_pipelines(pipelines_dir())


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def toy_spec(epochs: int = 2, seeds: tuple[int, ...] = (0, 1)) -> PipelineSpec:
    """Two alignment heads and a classifier on the toy stores, evaluated by retrieval, plus a majority floor."""
    base = {"dataset": "toy", "backbones": ("image", "text-a")}
    ret = EvalSpec("retrieval", options={"split": "test", "hit_ks": [1, 5, 20]})
    return PipelineSpec(
        "toy", "toy table", seeds=seeds,
        runs=(RunSpec("convirt", "convirt-frozen", train={"pairing": "links", "epochs": 2}, evals=(ret,), **base),
              RunSpec("cbmf", "cbmf-add", train={"pairing": "links", "epochs": epochs}, evals=(ret,), **base),
              RunSpec("concat", "mlp-concat", train={"epochs": 2}, **base),
              RunSpec("majority", trainer="majority", dataset="toy", backbones=("image",), seeds=(0,))),
        columns=(ColumnSpec("R@1", "image_to_text_R@1", 100.0), ColumnSpec("acc", "acc")),
        rows=(RowSpec("ConVIRT", "convirt", "retrieval", kind="baseline"), RowSpec("CBMF", "cbmf", "retrieval"),
              RowSpec("concat", "concat"), RowSpec("floor", "majority", keys={"acc": "acc"}, kind="floor")))


# ---------------------------------------------------------------- specs


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_spec_round_trips_through_toml(name: str, tmp_path: Path) -> None:
    spec = load_pipeline(name)
    assert spec.name == name
    (tmp_path / f"{name}.toml").write_text(dump_pipeline(spec))
    again = load_pipeline(tmp_path / f"{name}.toml")
    assert again == spec
    assert spec_from_dict(spec_to_dict(spec)) == spec


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    spec = dataclasses.replace(
        toy_spec(), source="a paper, Table 9", reference="cbmf-table4", demo=True, twin_of="x", notes=("n1", "n 2"),
        stores=(StoreSpec("shapes", "minilm", name="s", tokens=True, options={"size": 30, "labels": "multi"},
                          root="/r", limit=7),))
    path = tmp_path / "t.toml"
    path.write_text(dump_pipeline(spec))
    loaded = load_pipeline(path)
    assert loaded == spec
    assert loaded.stores[0].options == {"size": 30, "labels": "multi"} and loaded.stores[0].limit == 7
    assert loaded.runs[1].evals[0].options == {"split": "test", "hit_ks": [1, 5, 20]}
    assert loaded.path == str(path)


def test_spec_errors_name_the_problem() -> None:
    raw = spec_to_dict(toy_spec())
    with pytest.raises(ValueError, match="unknown key.*'epoch'.*known: id, head"):
        spec_from_dict({**raw, "runs": [{**raw["runs"][0], "epoch": 3}]})
    with pytest.raises(ValueError, match="run 'nope' is not one of"):
        spec_from_dict({**raw, "rows": [{"label": "x", "run": "nope"}]})
    with pytest.raises(ValueError, match=r"needs a \[pipeline\] table"):
        spec_from_dict({"runs": raw["runs"]})
    with pytest.raises(FileNotFoundError, match="known: .*demo-cbmf-cifar10"):
        load_pipeline("no-such-pipeline")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_spec_names_only_registered_things(name: str) -> None:
    assert [m.what for m in unregistered(load_pipeline(name))] == []


def test_every_paper_table_has_a_demo_twin() -> None:
    specs = [load_pipeline(n) for n in SHIPPED]
    real = {s.name for s in specs if not s.demo}
    twins = {s.twin_of for s in specs if s.demo}
    assert real and real == twins
    assert all(s.name == f"demo-{s.twin_of}" for s in specs if s.demo)


def test_missing_weights_and_stores_name_their_fix() -> None:
    from embedcache.backbones import BACKBONES
    from embedcache.backbones.common import WeightsNotFoundError
    from embedcache.fusion.train import StoresMissingError

    weights = Missing.from_error(WeightsNotFoundError(BACKBONES.get("bert"), ["Hugging Face hub"]))
    assert weights.what.startswith("weights for backbone 'bert' (bert-base-uncased @ ")
    assert weights.fix.startswith("hf download bert-base-uncased --revision ")
    stores = Missing.from_error(StoresMissingError(
        "h", {Path("x"): "embedcache extract d --model a", Path("y"): "embedcache extract d --model b"}))
    assert stores.what.startswith("`embedcache train h` needs the stores x, y")
    assert "\n  embedcache extract d --model b" in stores.detail
    assert stores.fix == "embedcache extract d --model a; embedcache extract d --model b"


def test_extract_command_spells_the_store() -> None:
    st = StoreSpec("shapes", "minilm", name="shapes-demo", tokens=True, options={"size": 300})
    assert extract_command(st, "/d", force=True) == (
        "embedcache extract shapes --model minilm --name shapes-demo --tokens -o size=300 --data-dir /d --force")


# ---------------------------------------------------------------- running


def _run(spec: PipelineSpec, tmp_path: Path, **kw):
    return run_pipeline(spec, Paths(tmp_path / "data", tmp_path / "results"), device="cpu", **kw)


def test_rerun_redoes_only_what_changed(tmp_path: Path) -> None:
    make_toy_stores(tmp_path / "data", sizes={"train": 120, "val": 30, "test": 30})
    first = _run(toy_spec(), tmp_path)
    assert first.status == "complete", first.summary()
    assert len(first.trained) == 7 and first.reused == []  # 3 heads x 2 seeds + one majority floor
    assert len(first.evaluated) == 4

    again = _run(toy_spec(), tmp_path)
    assert again.trained == [] and sorted(again.reused) == sorted(first.trained)
    assert again.evaluated == [] and len(again.kept_evals) == 4

    changed = _run(toy_spec(epochs=3), tmp_path)  # one run spec's setting changed: its 2 seeds only
    assert len(changed.trained) == 2 and all(i.startswith("cbmf-add-") for i in changed.trained)
    assert len(changed.reused) == 5
    assert sorted(e.split(":")[0] for e in changed.evaluated) == sorted(changed.trained)

    record = json.loads((tmp_path / "results" / "toy.json").read_text())
    assert record["status"] == "complete" and set(record["runs"]["cbmf"]) == {"0", "1"}
    md = (tmp_path / "results" / "toy.md").read_text()
    assert "| CBMF | ours |" in md and " ± " in md and "not run" not in md


def test_missing_dataset_still_writes_a_not_run_table(tmp_path: Path) -> None:
    spec = dataclasses.replace(
        toy_spec(), name="needs-coco", stores=(StoreSpec("coco", "bert", tokens=True),),
        reference="cbmf-table4", rows=(RowSpec("CBMF", "cbmf", "retrieval", ref="CBMF-add (Ours)"),),
        columns=(ColumnSpec("top-1", "zeroshot_top1", 100.0, ref="top1"),))
    result = _run(spec, tmp_path)
    assert result.status == "not run" and result.trained == []
    assert "dataset 'coco' not found" in result.missing[0].what
    assert result.missing[0].fix == "embedcache download coco"
    md = (tmp_path / "results" / "needs-coco.md").read_text()
    assert "**NOT RUN.**" in md and "`embedcache download coco`" in md and "`embedcache run needs-coco`" in md
    assert "| CBMF | ours | — | 0 | not run | 78.26 |" in md  # the paper's number is still shown beside
    assert "not run" in (tmp_path / "results" / "needs-coco.csv").read_text()
    assert not any((tmp_path / "results" / "runs").iterdir())


def test_unregistered_head_is_reported_not_raised(tmp_path: Path) -> None:
    spec = dataclasses.replace(toy_spec(), name="ghost", runs=(RunSpec("g", "no-such-head", dataset="toy"),),
                               rows=(RowSpec("ghost", "g"),))
    result = _run(spec, tmp_path)
    assert result.status == "not run"
    assert [m.what for m in result.missing] == ["head 'no-such-head' is not registered"]
    assert "head 'no-such-head' is not registered" in (tmp_path / "results" / "ghost.md").read_text()


def test_run_all_finishes_the_others_and_lists_what_did_not_run(tmp_path: Path) -> None:
    make_toy_stores(tmp_path / "data", sizes={"train": 60, "val": 20, "test": 20})
    folder = tmp_path / "pipelines"
    folder.mkdir()
    good = dataclasses.replace(toy_spec(seeds=(0,)), name="good",
                               runs=toy_spec().runs[:1], rows=toy_spec().rows[:1])
    bad = dataclasses.replace(good, name="bad", stores=(StoreSpec("mrpc", "minilm"),))
    for spec in (good, bad):
        (folder / f"{spec.name}.toml").write_text(dump_pipeline(spec))
    (folder / "broken.toml").write_text("[pipeline]\nname = 'broken'\ntitle = 'x'\nseeds = []\n")
    out = run_all(directory=folder, paths=Paths(tmp_path / "data", tmp_path / "results"), device="cpu")
    assert [r.name for r in out.results] == ["bad", "broken", "good"]
    assert [r.status for r in out.results] == ["not run", "failed", "complete"]
    assert out.exit_code == 1
    assert "did not run: bad (not run), broken (failed)" in out.summary()
    assert (tmp_path / "results" / "good.md").is_file() and (tmp_path / "results" / "bad.md").is_file()


# ---------------------------------------------------------------- a tiny demo, end to end


def test_tiny_demo_pipeline_end_to_end(tmp_path: Path) -> None:
    """demo-cbmf-cifar10 shrunk: 30 generated images, the real offline EfficientNet-Lite0 and MiniLM, one seed."""
    spec = load_pipeline("demo-cbmf-cifar10")
    stores = tuple(dataclasses.replace(s, options={**s.options, "size": 30}) if s.dataset == "shapes" else s
                   for s in spec.stores)
    runs = tuple(dataclasses.replace(r, train={**r.train, "epochs": 1, "batch_size": 16}) for r in spec.runs[1:])
    tiny = dataclasses.replace(spec, name="tiny-demo", stores=stores, runs=runs, seeds=(0,), rows=spec.rows[1:])
    result = _run(tiny, tmp_path)
    assert result.status == "complete", result.summary()
    assert len(result.trained) == 2 and len(result.evaluated) == 2
    md = (tmp_path / "results" / "tiny-demo.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| CBMF-add |"))
    ours = float(row.split("|")[5])  # top-1 accuracy of our run, a percentage
    assert 0.0 <= ours <= 100.0 and "78.26" in row  # ours beside the paper's CBMF-add top-1
    records = [json.loads(p.read_text()) for p in (tmp_path / "results" / "runs").glob("*/run.json")]
    top1 = next(r["metrics"]["zero-shot"]["zeroshot_top1"] for r in records if r["head"]["name"] == "cbmf-add")
    assert ours == pytest.approx(100 * top1, abs=0.01)  # the table shows the run's own recorded metric
    assert (tmp_path / "data" / "raw" / "shapes" / "shapes-30-s0-hard" / "meta.json").is_file()  # raw data in data_dir
    again = _run(tiny, tmp_path)  # stores fresh, runs and evaluations reused
    assert again.trained == [] and again.evaluated == []


def test_shipped_demo_specs_use_only_offline_backbones() -> None:
    from embedcache.backbones import BACKBONES

    for name in SHIPPED:
        spec = load_pipeline(name)
        if spec.demo:
            assert all(BACKBONES.get(s.backbone).offline for s in spec.stores), name


def test_reference_file_is_not_a_pipeline() -> None:
    assert "reference" not in SHIPPED and "pipeline" not in read_toml(pipelines_dir() / "reference.toml")


def test_a_damaged_store_is_not_run_with_the_force_fix(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    toy = make_toy_stores(tmp_path / "data", sizes={"train": 60, "val": 20, "test": 20})
    store = toy.paths["image"]
    store.write_bytes(store.read_bytes()[: store.stat().st_size // 2])  # truncated: an unreadable HDF5 file
    result = _run(dataclasses.replace(toy_spec(seeds=(0,)), runs=toy_spec().runs[:1], rows=toy_spec().rows[:1]),
                  tmp_path)
    assert result.status == "not run" and result.trained == []
    assert "--force" in result.missing[0].fix and "Traceback" not in caplog.text
    assert "**NOT RUN.**" in (tmp_path / "results" / "toy.md").read_text()


def test_an_unparsable_spec_fails_alone(tmp_path: Path) -> None:
    make_toy_stores(tmp_path / "data", sizes={"train": 60, "val": 20, "test": 20})
    folder = tmp_path / "pipelines"
    folder.mkdir()
    good = dataclasses.replace(toy_spec(seeds=(0,)), name="good", runs=toy_spec().runs[:1], rows=toy_spec().rows[:1])
    (folder / "good.toml").write_text(dump_pipeline(good))
    (folder / "garbled.toml").write_text("[pipeline\nname = 'garbled'\n")  # a TOML syntax error
    (folder / "orphan.toml").write_text('extends = "no-such-parent"\n')
    out = run_all(directory=folder, paths=Paths(tmp_path / "data", tmp_path / "results"), device="cpu")
    assert [(r.name, r.status) for r in out.results] == [("garbled", "failed"), ("good", "complete"),
                                                          ("orphan", "failed")]
    assert "not valid TOML" in out.results[0].missing[0].what and "no-such-parent" in out.results[2].missing[0].what
