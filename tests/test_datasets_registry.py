"""Every real-layout adapter, parametrized over the registry: names, options, and the not-found message."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from embedcache.datasets import DATASETS, DatasetNotFoundError, create_dataset
from embedcache.datasets.download import SOURCES
from embedcache.fingerprint import fingerprint

MODULES = ("coco", "flickr", "cifar", "tiny_imagenet", "glue", "mvsa", "mmsd", "fashion_mnist", "generic")
for _module in MODULES:  # importing registers (until datasets/__init__.py imports them itself)
    importlib.import_module(f"embedcache.datasets.{_module}")
NAMES = sorted(n for n in DATASETS.names()
               if DATASETS.get(n).__module__.rsplit(".", 1)[-1] in MODULES)
GENERIC = {"imagefolder", "pairs-tsv"}


def test_all_paper_datasets_are_registered() -> None:
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
