"""`extends` in pipeline specs: the merge rule, the round trip through the expanded form, and the errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedcache.tables.reference import pipelines_dir, read_toml
from embedcache.tables.runner import select_pipelines
from embedcache.tables.spec import dump_pipeline, list_pipelines, load_pipeline, resolve_extends, spec_to_dict

SHIPPED = list_pipelines(pipelines_dir())
EXTENDING = [n for n in SHIPPED if "extends" in read_toml(pipelines_dir() / f"{n}.toml")]

PARENT = """
[pipeline]
name = "parent"
title = "the parent"
reference = "cbmf-table3"
notes = ["parent note"]

[[stores]]
dataset = "coco"
backbone = "bert"
tokens = true

[[stores]]
dataset = "coco"
backbone = "roberta"

[[runs]]
id = "a"
head = "cbmf-add"
dataset = "coco"
backbones = ["bert", "roberta"]
train = {pairing = "links", epochs = 5}

[[runs.evals]]
task = "retrieval"
options = {split = "test", hit_ks = [1, 5]}

[[runs]]
id = "b"
head = "cbmf-dot"
dataset = "coco"
backbones = ["bert", "roberta"]

[[columns]]
label = "R@1"
metric = "image_to_text_R@1"

[[rows]]
label = "A"
run = "a"
metrics = "retrieval"

[[rows]]
label = "B"
run = "b"
"""

CHILD = """
extends = "parent"
replace = ["stores"]

[pipeline]
name = "child"
title = "the child"

[[stores]]
dataset = "shapes"
backbone = "minilm"

[[runs]]
train = {epochs = 2}

[[runs.evals]]
options = {split = "val"}

[[runs]]

[[rows]]
label = "A (child)"
"""

EXPANDED = """
[pipeline]
name = "child"
title = "the child"
reference = "cbmf-table3"
notes = ["parent note"]

[[stores]]
dataset = "shapes"
backbone = "minilm"

[[runs]]
id = "a"
head = "cbmf-add"
dataset = "coco"
backbones = ["bert", "roberta"]
train = {epochs = 2}

[[runs.evals]]
task = "retrieval"
options = {split = "val"}

[[runs]]
id = "b"
head = "cbmf-dot"
dataset = "coco"
backbones = ["bert", "roberta"]

[[columns]]
label = "R@1"
metric = "image_to_text_R@1"

[[rows]]
label = "A (child)"
run = "a"
metrics = "retrieval"
"""


def _write(folder: Path, **files: str) -> Path:
    for name, text in files.items():
        (folder / f"{name}.toml").write_text(text)
    return folder


def test_merge_rule_tables_by_key_arrays_by_position_values_whole(tmp_path: Path) -> None:
    _write(tmp_path, parent=PARENT, child=CHILD, expanded=EXPANDED)
    child, expanded = load_pipeline(tmp_path / "child.toml"), load_pipeline(tmp_path / "expanded.toml")
    assert spec_to_dict(child) == spec_to_dict(expanded)
    assert child.runs[0].train == {"epochs": 2}  # an inline table replaces the parent's whole
    assert child.runs[0].evals[0].task == "retrieval" and child.runs[0].evals[0].options == {"split": "val"}
    assert [r.label for r in child.rows] == ["A (child)"]  # the child's length: row B is dropped
    assert child.columns == load_pipeline(tmp_path / "parent.toml").columns  # left out: inherited
    assert [s.dataset for s in child.stores] == ["shapes"] and not child.stores[0].tokens  # replaced whole


def test_without_replace_an_array_merges_by_position(tmp_path: Path) -> None:
    _write(tmp_path, parent=PARENT, child=CHILD.replace('replace = ["stores"]\n', ""))
    stores = load_pipeline(tmp_path / "child.toml").stores
    assert [(s.dataset, s.backbone, s.tokens) for s in stores] == [("shapes", "minilm", True)]


@pytest.mark.parametrize("name", EXTENDING)
def test_shipped_spec_equals_its_expanded_form_and_saving_is_stable(name: str, tmp_path: Path) -> None:
    spec = load_pipeline(name)
    text = dump_pipeline(spec)
    (tmp_path / f"{name}.toml").write_text(text)
    assert "extends" not in read_toml(tmp_path / f"{name}.toml")  # alone in its folder: nothing left to extend
    again = load_pipeline(tmp_path / f"{name}.toml")
    assert again == spec and spec_to_dict(again) == spec_to_dict(spec)
    assert dump_pipeline(again) == text


def test_twins_state_only_what_differs() -> None:
    assert "demo-cbmf-mrpc" in EXTENDING and "cbmf-qqp" in EXTENDING
    twin, real = load_pipeline("demo-cbmf-mrpc"), load_pipeline("cbmf-mrpc")
    assert twin.columns == real.columns and twin.reference == real.reference  # inherited, not copied
    assert "columns" not in read_toml(pipelines_dir() / "demo-cbmf-mrpc.toml")
    assert load_pipeline("demo-cbmf-qqp").demo  # inherited through demo-cbmf-mrpc
    assert str(pipelines_dir() / "demo-cbmf-qqp.toml") in select_pipelines(demo=True)
    assert str(pipelines_dir() / "demo-cbmf-qqp.toml") not in select_pipelines(demo=False)


def test_cycles_and_unknown_parents_are_one_line_errors(tmp_path: Path) -> None:
    _write(tmp_path, a='extends = "b"\n[pipeline]\nname = "a"\n', b='extends = "a"\n[pipeline]\nname = "b"\n',
           c='extends = "nope"\n[pipeline]\nname = "c"\n', d='replace = ["rows"]\n[pipeline]\nname = "d"\n',
           e='extends = "a"\nreplace = ["row"]\n[pipeline]\nname = "e"\n')
    for name, message in (("a", "extends cycle a -> b -> a; remove one `extends`"),
                          ("c", "extends 'nope', but there is no .*nope.toml; known: a, b, c, d, e"),
                          ("d", "`replace` needs an `extends`"),
                          ("e", r"replace names \['row'\]; arrays of tables are: stores, runs")):
        with pytest.raises(ValueError, match=message) as err:
            resolve_extends(tmp_path / f"{name}.toml")
        assert "\n" not in str(err.value)
    assert set(list_pipelines(tmp_path)) == {"a", "b", "c", "d", "e"}
