"""Every real-layout adapter, parametrized over the registry: names, options, and the not-found message."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedcache.datasets import DATASETS, DatasetNotFoundError, create_dataset
from embedcache.datasets.download import SOURCES
from embedcache.fingerprint import fingerprint

# Read from a layout under `root` (published datasets and the generic user layouts); a new adapter is tested
# for free. Generated (shapes) and derived (class-prompts) adapters have their own tests.
NAMES = sorted(n for n in DATASETS.names() if DATASETS.get(n).origin in ("published", "user"))
GENERIC = {n for n in NAMES if DATASETS.get(n).origin == "user"}


def test_all_paper_datasets_are_registered() -> None:
    assert GENERIC == {"imagefolder", "pairs-tsv"}
    assert set(NAMES) == {"coco", "flickr8k", "cifar10", "cifar100", "tiny-imagenet", "mrpc", "qqp", "stsb",
                          "mvsa-single", "mvsa-multiple", "mmsd", "fashion-mnist", "imagefolder", "pairs-tsv"}


@pytest.mark.parametrize("name", NAMES)
def test_adapter_contract(name: str, tmp_path: Path) -> None:
    ds = create_dataset(name, root=tmp_path / "empty")
    assert ds.name == name and ds.modalities and set(ds.modalities) <= {"image", "text"}
    assert len(fingerprint(ds.options())) == 16  # options are plain data
    with pytest.raises(DatasetNotFoundError) as err:
        ds.load_split(ds.splits()[0])
    msg = str(err.value)
    assert str(tmp_path / "empty") in msg and "Expected layout:" in msg and "To get it:" in msg


@pytest.mark.parametrize("name", sorted(set(NAMES) - GENERIC))
def test_every_paper_dataset_has_a_download_entry(name: str) -> None:
    source = SOURCES.get(name)
    assert source.files or source.request


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_adapter_is_named_and_plain_data(name: str, tmp_path: Path) -> None:
    ds = create_dataset(name, root=tmp_path)
    assert type(ds).name == name and type(ds).origin in ("published", "user", "generated", "derived")
    assert ds.modalities and set(ds.modalities) <= {"image", "text"}
    assert len(fingerprint(ds.options())) == 16
    if name not in NAMES:  # generated or derived: splits known without any file (layout readers: above)
        assert ds.splits()


def test_every_download_source_names_a_published_adapter() -> None:
    for name in SOURCES.names():
        source = SOURCES.get(name)
        assert DATASETS.get(source.dataset or name).origin == "published", name
