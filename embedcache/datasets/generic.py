"""Generic adapters for users' own data: `imagefolder` and `pairs-tsv`. Their store name comes from --name.

imagefolder (torchvision ImageFolder's layout, plus optional captions)::

    <root>/<class>/<image>.jpg            one folder per class; classes sorted by name = label index
    <root>/<class>/<image>.txt            optional sidecar: the image's caption on its first line
    or <root>/{train,val,test}/<class>/<image>   when every top-level folder is a split name

pairs-tsv::

    <root>/<split>.tsv   (or --root pointing at one .tsv file: one split named after it)
    a header row naming the columns; options a, b (the two text columns), score (a number: a score or a 0/1
    label), optional id_a, id_b (sentence id columns; default '<line>-a' / '<line>-b'), delimiter (default tab)
"""

from __future__ import annotations

from pathlib import Path

from embedcache.datasets import DATASETS
from embedcache.datasets.base import BadItemError, Dataset, DatasetNotFoundError, Item, Split
from embedcache.datasets.common import (
    ParsedPair,
    Row,
    check_choice,
    contained,
    contained_item,
    decode,
    find_root,
    pairs_split,
    read_lines,
    read_tsv,
)
from embedcache.errors import BadInputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
SPLIT_NAMES = ("train", "val", "valid", "dev", "test")
FOLDER_LAYOUT = """\
<root>/<class>/<image>.jpg   (+ optional <image>.txt caption beside it)
or <root>/train|val|test/<class>/<image>.jpg"""
PAIRS_LAYOUT = """\
<root>/<split>.tsv   with a header row; columns named by the options a, b, score (and optional id_a, id_b)"""


@DATASETS.register("imagefolder")
class ImageFolder(Dataset):
    """Images sorted into one folder per class, optionally split into train/val/test folders, with captions."""

    name = "imagefolder"
    origin = "user"
    version = "1"
    modalities = ("image", "text")
    label_kind = "single"

    def __init__(self, root: str | Path | None = None) -> None:
        super().__init__(root)

    def _split_dirs(self) -> dict[str, Path]:
        root = _given_root(self, FOLDER_LAYOUT, "pass --root <folder> and --name <store name>")
        dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if dirs and all(p.name in SPLIT_NAMES for p in dirs):
            return {p.name: p for p in dirs}
        return {"all": root}

    def splits(self) -> list[str]:
        return list(self._split_dirs())

    def source_files(self) -> dict[str, list[Path]]:
        root = _given_root(self, FOLDER_LAYOUT, "pass --root <folder> and --name <store name>")
        return {"captions (*.txt)": sorted(root.rglob("*.txt"))}

    @property
    def classes(self) -> tuple[str, ...]:
        names = {p.name for d in self._split_dirs().values() for p in d.iterdir()
                 if p.is_dir() and not p.name.startswith(".")}
        return tuple(sorted(names))

    def load_split(self, split: str) -> Split:
        dirs = self._split_dirs()
        folder = dirs[check_choice("split", split, list(dirs))]
        root = _given_root(self, FOLDER_LAYOUT, "pass --root <folder> and --name <store name>")
        index = {c: i for i, c in enumerate(self.classes)}
        images, texts = [], []
        for cls in sorted(p for p in folder.iterdir() if p.is_dir() and p.name in index):
            for path in sorted(cls.iterdir()):
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                item_id = f"{cls.name}/{path.name}"
                rel = path.relative_to(root)  # a symlinked image, caption or class folder must stay in the root
                images.append(contained_item(root, rel, Item(id=item_id, label=index[cls.name])))
                if path.with_suffix(".txt").is_file():
                    texts.append(_caption(root, rel.with_suffix(".txt"), item_id, index[cls.name]))
        return Split(split, images, texts)


def _given_root(ds: Dataset, layout: str, fix: str) -> Path:
    """The --root the user gave (it must exist): users' own data has no default location."""
    if ds.root is None:
        raise DatasetNotFoundError(ds.name, ["(no --root given)"], layout, fix)
    return find_root(ds.name, ds.root, ["."], layout, fix, data_dir=ds.data_dir)


def _caption(root: Path, name: Path, image_id: str, label: int) -> Item:
    try:
        path = contained(root, name, image_id)
    except BadItemError as exc:
        return Item(id=image_id, link=image_id, label=label, error=exc.reason)
    lines = read_lines(path)
    text, error = decode(lines[0] if lines else b"", image_id)
    if error is None and not text.strip():
        text, error = None, f"empty caption in {path.name}"
    return Item(id=image_id, text=text.strip() if text else None, link=image_id, label=label, error=error)


@DATASETS.register("pairs-tsv")
class PairsTsv(Dataset):
    """Text pairs with a score or 0/1 label from delimited files with a header; columns chosen by options."""

    name = "pairs-tsv"
    origin = "user"
    version = "1"
    modalities = ("text",)
    label_kind = "none"

    def __init__(self, root: str | Path | None = None, *, a: str = "sentence1", b: str = "sentence2",
                 score: str = "score", id_a: str | None = None, id_b: str | None = None,
                 delimiter: str = "\t") -> None:
        if (id_a is None) != (id_b is None):
            raise BadInputError("options id_a and id_b go together: give both sentence-id columns or neither")
        super().__init__(root, a=a, b=b, score=score, id_a=id_a, id_b=id_b, delimiter=delimiter)

    def _files(self) -> dict[str, Path]:
        if self.root is not None and self.root.is_file():
            return {self.root.stem: self.root}
        root = _given_root(self, PAIRS_LAYOUT, "pass --root <folder or .tsv file> and --name <store name>")
        files = {p.stem: p for p in sorted(root.glob("*.tsv"))}
        if not files:
            raise DatasetNotFoundError(self.name, [f"{root}/*.tsv"], PAIRS_LAYOUT, "put <split>.tsv files there")
        return files

    def splits(self) -> list[str]:
        return list(self._files())

    def source_files(self) -> dict[str, list[Path]]:
        return {path.name: [path] for path in self._files().values()}

    def load_split(self, split: str) -> Split:
        path = self._files()[check_choice("split", split, self.splits())]
        o = self._options
        required = [c for c in (o["a"], o["b"], o["score"], o["id_a"], o["id_b"]) if c]
        return pairs_split(split, read_tsv(path, required, delimiter=o["delimiter"]), self._parse, path.name)

    def _parse(self, row: Row) -> ParsedPair:
        o, f = self._options, row.fields
        try:
            score = float(f[o["score"]])
        except ValueError:
            return f"column {o['score']!r} is {f[o['score']]!r}, expected a number"
        ids = (f[o["id_a"]], f[o["id_b"]]) if o["id_a"] else (f"{row.line}-a", f"{row.line}-b")
        if not f[o["a"]].strip() or not f[o["b"]].strip():
            return "empty text"
        return (ids[0], f[o["a"]]), (ids[1], f[o["b"]]), score
