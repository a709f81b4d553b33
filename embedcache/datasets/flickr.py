"""Flickr8k, the original release (Hodosh et al. 2013): 8,091 images, 5 captions each.

Published layout (checked against public loaders, e.g. github saharshxyz/altML ml/train_val_data/readme.md and
arbisahraoui/image-caption config.py, and the mirrors github.com/jbrownlee/Datasets/releases/Flickr8k):
the image archive Flickr8k_Dataset.zip unpacks to ``Flicker8k_Dataset/`` (sic, "Flicker"), the text archive
Flickr8k_text.zip holds::

    Flickr8k.token.txt           <image file>#<n><TAB><caption>   (n = 0..4, UTF-8, no header)
    Flickr_8k.trainImages.txt    one image file name per line (6,000)
    Flickr_8k.devImages.txt      (1,000)
    Flickr_8k.testImages.txt     (1,000)

The text files are looked for in ``<root>/Flickr8k_text/`` and in ``<root>/``. The token file lists captions
of an image that is in no split file (``2258277193_586949ec62.jpg.1``); captions are kept only for images of
the split being read. Image ids are the file names, caption ids the ``<file>#<n>`` keys (link = the file).
The split ``all`` is every image of the token file that is on disk with all its captions (8,091 images, 40,455
captions: the rows of the CBMF authors' captions.txt, which their Fig. 4 retrieval queries), whether or not
a split file lists it.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from embedcache.datasets import DATASETS
from embedcache.datasets.base import Dataset, DatasetFormatError, Item, Split
from embedcache.datasets.common import check_choice, contained_item, decode, find_root, read_lines, require_file
from embedcache.datasets.download import RemoteFile, Source, register_source

IMAGES = "Flicker8k_Dataset"  # the published folder name, misspelt
TEXT = "Flickr8k_text"
TOKENS = "Flickr8k.token.txt"
SPLIT_FILES = {"train": "Flickr_8k.trainImages.txt", "dev": "Flickr_8k.devImages.txt",
               "test": "Flickr_8k.testImages.txt"}
ALL = "all"  # every captioned image on disk: the CBMF authors' Fig. 4 protocol
LAYOUT = """\
<root>/
  Flicker8k_Dataset/<image>.jpg         (from Flickr8k_Dataset.zip; note the spelling 'Flicker')
  Flickr8k_text/Flickr8k.token.txt      (from Flickr8k_text.zip; its files may also sit directly in <root>)
  Flickr8k_text/Flickr_8k.trainImages.txt  Flickr_8k.devImages.txt  Flickr_8k.testImages.txt"""


@DATASETS.register("flickr8k")
class Flickr8k(Dataset):
    """Flickr8k images and their 5 captions each, in the published train/dev/test splits."""

    name = "flickr8k"
    version = "1"
    modalities = ("image", "text")
    label_kind = "none"

    def __init__(self, root: str | Path | None = None) -> None:
        super().__init__(root)

    def splits(self) -> list[str]:
        return [*SPLIT_FILES, ALL]

    def _paths(self) -> tuple[Path, Path]:
        """(image folder, text folder)."""
        root = find_root(self.name, self.root, [IMAGES], LAYOUT, "embedcache download flickr8k", data_dir=self.data_dir)
        for text in (root / TEXT, root):
            if (text / TOKENS).is_file():
                return root / IMAGES, text
        raise DatasetFormatError(f"{root} has {IMAGES}/ but no {TOKENS} in {root / TEXT} or {root}; "
                                 f"unpack Flickr8k_text.zip into {root / TEXT} (embedcache download flickr8k).")

    def source_files(self) -> dict[str, list[Path]]:
        text_dir = self._paths()[1]
        return {name: [text_dir / name] for name in (TOKENS, *SPLIT_FILES.values())}

    def load_split(self, split: str) -> Split:
        check_choice("split", split, self.splits())
        images_dir, text_dir = self._paths()
        captions = _read_tokens(text_dir / TOKENS)
        if split == ALL:  # a token key without its image (the stray '...jpg.1') is no row of the authors' file
            names = [n for n in captions if (images_dir / n).is_file()]
        else:
            names = self._split_images(require_file(text_dir / SPLIT_FILES[split], "Flickr8k split list",
                                                    "It is part of Flickr8k_text.zip."))
        images = [contained_item(images_dir, n, Item(id=n)) for n in names]
        texts = [it for n in names for it in captions.get(n, [])]
        return Split(split, images, texts)

    @staticmethod
    def _split_images(path: Path) -> list[str]:
        names = []
        for n, raw in enumerate(read_lines(path), start=1):
            name = raw.strip().decode("utf-8", errors="replace")
            if not name:
                continue
            if "\t" in name or "#" in name:
                raise DatasetFormatError(f"{path}, line {n}: expected one image file name per line, found {name!r}")
            names.append(name)
        return names


def _read_tokens(path: Path) -> dict[str, list[Item]]:
    """image file -> its caption items, in file order. A line without a parseable key is a layout error."""
    out: dict[str, list[Item]] = defaultdict(list)
    for n, raw in enumerate(read_lines(path), start=1):
        if not raw.strip():
            continue
        key, tab, rest = raw.partition(b"\t")
        image, hash_, number = key.decode("utf-8", errors="replace").rpartition("#")
        if not hash_ or not number.isdigit():
            raise DatasetFormatError(f"{path}, line {n}: expected '<image>#<n><TAB><caption>', "
                                     f"found {raw[:80].decode('utf-8', errors='replace')!r}")
        cap_id = f"{image}#{number}"
        text, error = decode(rest, cap_id)
        if error is None and (not tab or not text.strip()):
            text, error = None, "empty caption" if tab else "no tab between caption id and caption"
        out[image].append(Item(id=cap_id, text=text.strip() if text else None, link=image, error=error))
    return out


# Flickr8k's official form is gone; this mirror serves the original zips (no published checksums).
FLICKR = "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k"
register_source(Source("flickr8k", (RemoteFile(f"{FLICKR}/Flickr8k_Dataset.zip"),
                                    RemoteFile(f"{FLICKR}/Flickr8k_text.zip", extract_to="Flickr8k_text"))))
