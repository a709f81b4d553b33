"""A new dataset or head is one new file, tested for free: the registries fill themselves from their package,
and the parametrised tests cover every registered name."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import test_datasets_registry
import test_heads
import test_heads_mlp

import embedcache
from embedcache.datasets import DATASETS
from embedcache.datasets.download import SOURCES
from embedcache.fusion.heads import HEADS

TESTS = Path(__file__).parent

TOY_DATASET = '''
from embedcache.datasets import DATASETS
from embedcache.datasets.base import Dataset, DatasetNotFoundError, Split
from embedcache.datasets.download import RemoteFile, Source, register_source


@DATASETS.register("toy")
class Toy(Dataset):
    name = "toy"
    modalities = ("text",)

    def splits(self) -> list[str]:
        return ["test"]

    def load_split(self, split: str) -> Split:
        raise DatasetNotFoundError(self.name, [self.root], "<root>/toy.txt", "embedcache download toy")


register_source(Source("toy", (RemoteFile("https://example.org/toy.zip"),)))
'''
TOY_HEAD = '''
from embedcache.fusion.heads.base import HEADS
from embedcache.fusion.heads.convirt import ConVIRTHead


@HEADS.register("toy-head")
class ToyHead(ConVIRTHead):
    """A ConVIRT head under another name."""
'''


def _ours(registry) -> set[str]:
    """Names registered by the package (other tests register toy adapters of their own)."""
    return {n for n in registry.names() if registry.get(n).__module__.startswith("embedcache.")}


def test_every_registered_name_is_covered_by_the_parametrised_tests() -> None:
    published = {n for n in _ours(DATASETS) if DATASETS.get(n).origin == "published"}
    assert published <= set(test_datasets_registry.NAMES)  # contract + download entry (all names: plain data)
    assert {SOURCES.get(n).dataset or n for n in SOURCES.names()} <= published
    # a head that is neither an alignment nor a classifier head would be tested by neither module
    assert set(test_heads.ALIGNMENT) | set(test_heads_mlp.CLASSIFIERS) >= _ours(HEADS)
    assert not set(test_heads.ALIGNMENT) & set(test_heads_mlp.CLASSIFIERS)


def test_one_new_file_registers_and_is_tested(tmp_path: Path) -> None:
    """A copy of the package plus datasets/toy.py and fusion/heads/toy.py: both names register with no other
    edit, and the parametrised registry tests run on them and pass."""
    package = tmp_path / "embedcache"
    shutil.copytree(Path(embedcache.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "datasets" / "toy.py").write_text(TOY_DATASET)
    (package / "fusion" / "heads" / "toy.py").write_text(TOY_HEAD)
    tests = [str(TESTS / f) for f in ("test_datasets_registry.py", "test_heads.py")]
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}  # the copy, not the checkout
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-k", "toy", *tests],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    passed = {line.rsplit("/", 1)[-1] for line in out.stdout.splitlines() if line.startswith("PASSED ")}
    assert passed >= {"test_datasets_registry.py::test_adapter_contract[toy]",
                      "test_datasets_registry.py::test_every_paper_dataset_has_a_download_entry[toy]",
                      "test_datasets_registry.py::test_every_adapter_is_named_and_plain_data[toy]",
                      "test_heads.py::test_shapes_gradients_and_finite_loss[True-toy-head]",
                      "test_heads.py::test_padding_is_ignored[toy-head]"}, out.stdout[-3000:]


def test_every_backbone_spec_has_an_adapter_and_every_adapter_a_spec() -> None:
    from embedcache.backbones import ADAPTERS, BACKBONES

    kinds = {f"{BACKBONES.get(n).library}:{BACKBONES.get(n).modality}" for n in BACKBONES.names()}
    assert kinds == set(ADAPTERS.names())
