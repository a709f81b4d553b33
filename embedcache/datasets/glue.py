"""MRPC, QQP and STS-B: graded text pairs from the GLUE TSV files (or, online, the Hugging Face `glue` dataset).

Published layouts, checked against the GLUE download script (gist W4ngatang/download_glue_data.py, which
unpacks QQP-clean.zip to ``QQP/`` and STS-B.zip to ``STS-B/`` and builds MRPC from the msr files) and the
Hugging Face `glue` builder (which reads every TSV with ``csv.QUOTE_NONE`` and MRPC from msr_paraphrase_*.txt,
BOM included, plus mrpc_dev_ids.tsv)::

    QQP/train.tsv, dev.tsv     id  qid1  qid2  question1  question2  is_duplicate
    STS-B/train.tsv, dev.tsv   index genre filename year old_index source1 source2 sentence1 sentence2 score
    MRPC/train.tsv, dev.tsv    Quality  #1 ID  #2 ID  #1 String  #2 String
    MRPC/msr_paraphrase_train.txt, msr_paraphrase_test.txt   (same columns; GLUE's dev = the train rows whose
        (#1 ID, #2 ID) are in mrpc_dev_ids.tsv or dev_ids.tsv; msr_paraphrase_test.txt keeps its labels)

GLUE's test.tsv files carry no labels and are not splits here. Text items: QQP's qid, MRPC's sentence ids,
STS-B's ``<index>-1`` / ``<index>-2`` (a repeated id within a split is kept once). Pairs: (a, b, score) with the
0/1 label (MRPC, QQP) or the 0-5 similarity (STS-B). A malformed row becomes one text item with an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedcache.datasets import DATASETS
from embedcache.datasets.base import Dataset, DatasetNotFoundError, Split
from embedcache.datasets.common import ParsedPair, Row, check_choice, find_root, pairs_split, read_tsv
from embedcache.datasets.download import RemoteFile, Source, register_source


@dataclass(frozen=True)
class GlueSpec:
    """Columns of one GLUE task's TSV files and where its files live."""

    folder: str  # the folder the GLUE zip unpacks to
    hf_config: str  # Hugging Face `glue` config name
    text_a: str
    text_b: str
    score: str
    id_a: str | None  # column holding a sentence id; None: ids are '<index>-1' / '<index>-2'
    id_b: str | None
    index: str | None  # row index column used for ids when there is no sentence id
    score_range: tuple[float, float]


QQP = GlueSpec("QQP", "qqp", "question1", "question2", "is_duplicate", "qid1", "qid2", None, (0, 1))
STSB = GlueSpec("STS-B", "stsb", "sentence1", "sentence2", "score", None, None, "index", (0, 5))
MRPC = GlueSpec("MRPC", "mrpc", "#1 String", "#2 String", "Quality", "#1 ID", "#2 ID", None, (0, 1))
HF_SPLITS = {"train": "train", "dev": "validation", "test": "test"}


class _Glue(Dataset):
    modalities = ("text",)
    label_kind = "none"
    spec: GlueSpec

    def __init__(self, root: str | Path | None = None, *, source: str = "tsv") -> None:
        super().__init__(root, source=check_choice("source", source, ("tsv", "hf")))

    def _layout(self) -> str:
        s = self.spec
        cols = [c for c in (s.id_a, s.id_b, s.index, s.text_a, s.text_b, s.score) if c]
        return f"<root>/{s.folder}/ (or <root> itself)\n  train.tsv  dev.tsv   columns include: {', '.join(cols)}"

    def _fix(self) -> str:
        return f"embedcache download {self.name}, or use the Hugging Face copy online with `-o source=hf`"

    def _root(self) -> Path:
        return find_root(self.name, self.root, ["train.tsv", "dev.tsv"], self._layout(), self._fix(),
                         nested=(self.spec.folder,), data_dir=self.data_dir)

    def splits(self) -> list[str]:
        return ["train", "dev"]

    def source_files(self) -> dict[str, list[Path]]:
        if self._options["source"] == "hf":
            return {}  # read online, from the hub's pinned copy
        root = self._root()
        return {p.name: [p] for p in sorted([*root.glob("*.tsv"), *root.glob("*.txt")])}

    def load_split(self, split: str) -> Split:
        check_choice("split", split, self.splits())
        if self._options["source"] == "hf":
            return rows_to_split(split, _hf_rows(self.spec.hf_config, HF_SPLITS[split]), HF_SPEC[self.spec.hf_config])
        path = self._root() / f"{split}.tsv"
        return tsv_to_split(split, path, self.spec)


def tsv_to_split(split: str, path: Path, spec: GlueSpec,
                 keep: Callable[[dict[str, str]], bool] | None = None) -> Split:
    """Read one GLUE TSV into text items and pairs. `keep(row_fields)` may filter rows (MRPC's dev ids)."""
    required = [c for c in (spec.id_a, spec.id_b, spec.index, spec.text_a, spec.text_b, spec.score) if c]
    # Extra trailing fields are ignored, as csv.DictReader does in the HF builder (which reads every row).
    rows = (r for r in read_tsv(path, required, extra_ok=True) if r.fields is None or keep is None or keep(r.fields))
    return pairs_split(split, rows, lambda row: _parse(row, spec), path.name)


def rows_to_split(split: str, rows: Iterable[Mapping[str, Any]], spec: GlueSpec) -> Split:
    """The Hugging Face `glue` rows (sentence1/sentence2 or question1/question2, label, idx) as a Split;
    rows with label -1 (unlabelled test rows) are dropped."""
    fields = ({k: str(v) for k, v in row.items()} for row in rows if float(row["label"]) >= 0)
    return pairs_split(split, (Row(n, f) for n, f in enumerate(fields, start=1)), lambda row: _parse(row, spec),
                       f"hf:{spec.hf_config}")


def _parse(row: Row, spec: GlueSpec) -> ParsedPair:
    """((id_a, text_a), (id_b, text_b), score), or the reason the row is unusable."""
    f = row.fields
    try:
        score = float(f[spec.score])
    except ValueError:
        return f"{spec.score} is {f[spec.score]!r}, expected a number"
    lo, hi = spec.score_range
    if not lo <= score <= hi:
        return f"{spec.score} {score} is outside {lo}..{hi}"
    if spec.id_a and spec.id_b:
        ids = f[spec.id_a].strip(), f[spec.id_b].strip()
    else:
        ids = f"{f[spec.index]}-1", f"{f[spec.index]}-2"
    if not all(ids):
        return "empty sentence id"
    if not f[spec.text_a].strip() or not f[spec.text_b].strip():
        return "empty sentence"
    return (ids[0], f[spec.text_a]), (ids[1], f[spec.text_b]), score


# The Hugging Face rows have no sentence ids: ids are '<idx>-1' / '<idx>-2' there.
HF_SPEC = {
    "qqp": GlueSpec("QQP", "qqp", "question1", "question2", "label", None, None, "idx", (0, 1)),
    "stsb": GlueSpec("STS-B", "stsb", "sentence1", "sentence2", "label", None, None, "idx", (0, 5)),
    "mrpc": GlueSpec("MRPC", "mrpc", "sentence1", "sentence2", "label", None, None, "idx", (0, 1)),
}


def _hf_rows(config: str, split: str) -> Iterable[Mapping[str, Any]]:
    """Rows of the Hugging Face `glue` dataset (online; needs the `datasets` package)."""
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError:
        raise DatasetNotFoundError(
            f"glue/{config}", ["Hugging Face hub (source=hf)"], "the Hugging Face `glue` dataset",
            "pip install datasets (and have a network), or use the local TSV files: embedcache download "
            f"{config}") from None
    return datasets.load_dataset("glue", config, split=split)


@DATASETS.register("qqp")
class Qqp(_Glue):
    """Quora Question Pairs (GLUE): question pairs with is_duplicate 0/1."""

    name = "qqp"
    version = "1"
    spec = QQP


@DATASETS.register("stsb")
class Stsb(_Glue):
    """STS-B (GLUE): sentence pairs with a similarity score 0-5."""

    name = "stsb"
    version = "1"
    spec = STSB


@DATASETS.register("mrpc")
class Mrpc(_Glue):
    """MRPC: GLUE's train.tsv/dev.tsv, or the original msr_paraphrase_{train,test}.txt (+ the GLUE dev ids)."""

    name = "mrpc"
    version = "1"
    spec = MRPC
    MSR_TRAIN, MSR_TEST, DEV_IDS = "msr_paraphrase_train.txt", "msr_paraphrase_test.txt", ("mrpc_dev_ids.tsv",
                                                                                          "dev_ids.tsv")

    def _layout(self) -> str:
        return (super()._layout() + "\n  or the original release: msr_paraphrase_train.txt, msr_paraphrase_test.txt"
                " and mrpc_dev_ids.tsv (GLUE's dev split: '<#1 ID><TAB><#2 ID>' per line)")

    def _root(self) -> Path:
        try:
            return super()._root()
        except DatasetNotFoundError:
            return find_root(self.name, self.root, [self.MSR_TRAIN], self._layout(), self._fix(),
                             nested=(self.spec.folder,), data_dir=self.data_dir)

    def _msr(self, root: Path) -> bool:
        return not (root / "train.tsv").is_file() and (root / self.MSR_TRAIN).is_file()

    def _dev_ids(self, root: Path) -> set[tuple[str, str]] | None:
        for name in self.DEV_IDS:
            if (root / name).is_file():
                lines = (ln.split("\t") for ln in (root / name).read_text("utf-8-sig").splitlines() if ln.strip())
                return {(p[0].strip(), p[1].strip()) for p in lines if len(p) >= 2}
        return None

    def splits(self) -> list[str]:
        if self._options["source"] == "hf":
            return ["train", "dev", "test"]
        root = self._root()
        if not self._msr(root):
            return ["train", "dev"] + (["test"] if (root / self.MSR_TEST).is_file() else [])
        has_dev = self._dev_ids(root) is not None
        return ["train"] + (["dev"] if has_dev else []) + (["test"] if (root / self.MSR_TEST).is_file() else [])

    def load_split(self, split: str) -> Split:
        check_choice("split", split, self.splits())
        if self._options["source"] == "hf" or split != "test" and not self._msr(self._root()):
            return super().load_split(split)
        root = self._root()
        if split == "test":
            return tsv_to_split(split, root / self.MSR_TEST, self.spec)
        dev = self._dev_ids(root) or set()
        in_dev = split == "dev"
        return tsv_to_split(split, root / self.MSR_TRAIN, self.spec,
                            keep=lambda f: ((f["#1 ID"], f["#2 ID"]) in dev) == in_dev)


# GLUE publishes no checksums. MRPC is not hosted by GLUE: the msr files as mirrored by SentEval plus GLUE's dev
# ids (as the HF builder does).
GLUE = "https://dl.fbaipublicfiles.com/glue/data"
SENTEVAL = "https://dl.fbaipublicfiles.com/senteval/senteval_data"
register_source(
    Source("qqp", (RemoteFile(f"{GLUE}/QQP-clean.zip"),)),
    Source("stsb", (RemoteFile(f"{GLUE}/STS-B.zip"),)),
    Source("mrpc", (RemoteFile(f"{SENTEVAL}/msr_paraphrase_train.txt", extract_to=None),
                    RemoteFile(f"{SENTEVAL}/msr_paraphrase_test.txt", extract_to=None),
                    RemoteFile(f"{GLUE}/mrpc_dev_ids.tsv", extract_to=None))),
)
