"""A restricted unpickler for data files that are pickles (CIFAR's python release): it admits only the types
those files hold (dict, list, str, bytes, int, float and numpy arrays/dtypes as numpy pickles them), so a
file whose pickle names any other callable (os.system, subprocess, eval, ...) is refused before it runs.

`pickle.load` on a user's file is code execution: a pickle's REDUCE opcode calls whatever global it names.
Here every global goes through `find_class`, which answers only from the allow-list below.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from embedcache.datasets.base import DatasetFormatError

# (module, name) pairs numpy and python use to pickle the containers and arrays of a data file. numpy 1.x
# writes numpy.core.*, numpy 2.x numpy._core.*; protocol 2 writes bytes through _codecs.encode (pure data),
# protocol 5 writes arrays through numeric._frombuffer. Nothing here has side effects.
ALLOWED = frozenset({
    ("numpy", "ndarray"), ("numpy", "dtype"),
    *((f"numpy.{core}.multiarray", name) for core in ("core", "_core") for name in ("_reconstruct", "scalar")),
    *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),
    ("_codecs", "encode"), ("builtins", "bytearray"), ("__builtin__", "bytearray"),
})


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: data files may hold only dicts, "
                                         "lists, strings, numbers and numpy arrays")
        return super().find_class(module, name)


def load_data_pickle(path: Path, fix: str) -> Any:
    """Unpickle a data file through the allow-list (latin1 strings: the CIFAR release was pickled by python 2).
    A file that names any other global, or is not a pickle at all, raises DatasetFormatError naming the file
    and `fix`; nothing it names is ever called."""
    try:
        with open(path, "rb") as f:
            return _DataOnlyUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise DatasetFormatError(f"missing {path}; {fix}") from None
    except pickle.UnpicklingError as exc:
        raise DatasetFormatError(f"{path}: not a safe data pickle ({exc}); {fix}") from None
    except (EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError, KeyError) as exc:
        raise DatasetFormatError(f"{path}: not a data pickle ({type(exc).__name__}); {fix}") from None
