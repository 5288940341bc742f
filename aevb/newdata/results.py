"""What the new-data methods of a run hand back: a table with one row per item, its columns
numpy arrays of N rows ("id" first), read by name (``codes["mu"]``, ``codes.mu``), as one flat
table (:meth:`ItemTable.to_pandas`, the columns a CSV file gets) or as one float matrix
(:meth:`ItemTable.matrix`, what a ``.npy`` file gets).

A column [N, J] becomes the flat columns ``NAME_0`` .. ``NAME_{J-1}``, one [N, S, J] becomes
``NAME_s_j``: the CSV file written by ``aevb encode`` and the data frame of ``to_pandas()`` have
the same columns.
"""
from __future__ import annotations

import re
from typing import Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np

from ..errors import DataError

ID = "id"


def flat_names(name: str, shape: Tuple[int, ...]) -> List[str]:
    """The flat column names of a column whose rows have ``shape``: ``[name]`` for scalars,
    ``name_j`` for vectors, ``name_s_j`` for matrices."""
    if not shape:
        return [name]
    return [f"{name}_" + "_".join(map(str, ix)) for ix in np.ndindex(*shape)]


def flat_columns(columns: Mapping[str, np.ndarray]) -> Tuple[List[str], List[np.ndarray]]:
    """(names, blocks [N, C_i]) of ``columns`` with every column flattened to 2-D: the header and
    the values of a CSV file or a data frame, one row per item."""
    names, blocks = [], []
    for k, v in columns.items():
        names += flat_names(k, v.shape[1:])
        blocks.append(v.reshape(len(v), -1))
    return names, blocks


def code_columns(header) -> List[int]:
    """Which columns of a flat table hold codes: its ``mu_j`` columns in the order of j, else every
    column but ``id`` (a table of plain numbers)."""
    header = [str(h) for h in header]
    mu = [(int(m.group(1)), i) for i, h in enumerate(header) for m in [re.fullmatch(r"mu_(\d+)", h)] if m]
    return [i for _, i in sorted(mu)] if mu else [i for i, h in enumerate(header) if h != ID]


class ItemTable:
    """Results per item: named numpy columns of N rows each, ``id`` (each item's identity) first.

    Read a column as ``table["mu"]`` or ``table.mu``; ``keys()``, ``items()``, ``in`` and
    ``dict(table)`` work as on a dict of columns, ``len(table)`` is the number of items (as for a
    pandas DataFrame), ``table.ids`` the identities as a list of str, and ``table.to_pandas()``
    one row per item with a flat column per value."""

    # columns stacked by matrix(): None means every numeric column (see Codes and Scores)
    MATRIX: Optional[Tuple[str, ...]] = None

    def __init__(self, columns: Mapping[str, np.ndarray]):
        cols = {str(k): np.asarray(v) for k, v in columns.items()}
        lengths = {k: (len(v) if v.ndim else None) for k, v in cols.items()}
        if None in lengths.values() or len(set(lengths.values())) > 1:
            raise DataError("the columns of a table per item must have one row per item; got lengths "
                            + ", ".join(f"{k} {n}" for k, n in lengths.items()))
        self._columns: Dict[str, np.ndarray] = cols

    # ---------------------------------------------------------------- access by name
    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self._columns[name]
        except KeyError:
            raise KeyError(f"{name!r} is not a column of this table; its columns are "
                           f"{', '.join(self._columns)}") from None

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._columns[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no attribute or column {name!r}; its columns are "
                                 f"{', '.join(self._columns)}") from None

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._columns))

    def __contains__(self, name) -> bool:
        return name in self._columns

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return len(next(iter(self._columns.values()))) if self._columns else 0

    def keys(self):
        return self._columns.keys()

    def values(self):
        return self._columns.values()

    def items(self):
        return self._columns.items()

    def get(self, name: str, default=None):
        return self._columns.get(name, default)

    @property
    def ids(self) -> List[str]:
        """Each item's identity (a file's relative path, a row's index), as in ``Items.ids``."""
        return [str(i) for i in self._columns[ID]] if ID in self._columns else [str(i) for i in range(len(self))]

    def assign(self, **columns) -> "ItemTable":
        """A new table of the same kind with ``columns`` added (or replaced), as pandas' assign."""
        return type(self)({**self._columns, **columns})

    def __repr__(self) -> str:
        shapes = ", ".join(k if v.ndim == 1 else f"{k} {list(v.shape)}" for k, v in self._columns.items())
        return f"{type(self).__name__}({len(self)} items: {shapes})"

    # ---------------------------------------------------------------- as one table or matrix
    def __array__(self, dtype=None, copy=None):
        # pandas.DataFrame(table) and numpy.asarray(table) would otherwise take the table as the
        # list of its column names: refuse, saying what to use
        name = type(self).__name__.lower()
        matrix = (f"{name}.{self.MATRIX[0]} for the [N, J] matrix" if self.MATRIX and len(self.MATRIX) == 1
                  else f"{name}.matrix() for (column names, one float matrix)")
        raise DataError(f"a {type(self).__name__} table is not one array: use {name}.to_pandas() for a pandas "
                        f"DataFrame (one row per item, a column per value) or {matrix}")

    def to_pandas(self):
        """A pandas DataFrame with one row per item: ``id``, then a column per value (``mu_0`` ...,
        ``z_0_0`` ...: the columns of the CSV file). Needs pandas (``pip install pandas``)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(f"{type(self).__name__}.to_pandas() needs pandas, which is not installed: "
                              "pip install pandas") from None
        names, blocks = flat_columns(self._columns)
        data, j = {}, 0
        for block in blocks:
            for c in range(block.shape[1]):
                col = block[:, c]
                data[names[j]] = col.astype(object) if col.dtype.kind == "U" else col
                j += 1
        return pd.DataFrame(data)

    def matrix(self) -> Tuple[List[str], np.ndarray]:
        """(column names, float64 matrix [N, C]): the numeric values as one matrix, what a ``.npy``
        file holds (the ids go beside it)."""
        keys = self.MATRIX if self.MATRIX is not None else [k for k in self._columns if k != ID]
        cols = {k: self._columns[k] for k in keys if k in self._columns and self._columns[k].dtype.kind in "biuf"}
        names, blocks = flat_columns(cols)
        n = len(self)
        return names, (np.concatenate([b.astype(np.float64) for b in blocks], 1) if blocks else np.zeros((n, 0)))


def column(name: str, doc: str) -> property:
    """A table's column ``name`` as a read-only attribute (None when the table lacks it)."""
    return property(lambda self: self._columns.get(name), doc=doc)


class Codes(ItemTable):
    """The posterior q(z|x) of each item (``run.encode``): ``mu`` and ``log_var`` [N, J] float64,
    with draws ``z`` [N, S, J] when asked for (else None), and ``ids``. As one matrix (``.npy``):
    the posterior means ``mu``."""

    MATRIX = ("mu",)
    mu = column("mu", "posterior means [N, J]")
    log_var = column("log_var", "posterior log-variances [N, J]")
    z = column("z", "draws z ~ q(z|x) [N, S, J], or None")


class Scores(ItemTable):
    """Bounds per item in nats (``run.score``): ``elbo``, ``lk`` (L_k), ``lk_se`` (its standard
    error) and, for discrete data, ``bpd_elbo`` and ``bpd_lk``; the novelty scores of
    :mod:`aevb.newdata.novelty` (``complexity`` and ``novelty`` in bits, with a background run
    ``background_lk`` and ``lr`` in nats); against a reference split ``percentile`` and ``flag``.
    As one matrix (``.npy``): these columns in that order, as floats."""

    MATRIX = ("elbo", "lk", "lk_se", "bpd_elbo", "bpd_lk", "complexity", "novelty", "background_lk", "lr",
              "percentile", "flag")
    elbo = column("elbo", "the ELBO per item [N], nats")
    lk = column("lk", "L_k per item [N], nats")
    lk_se = column("lk_se", "the standard error of each L_k [N]")
    novelty = column("novelty", "the input-complexity novelty score -log2 p(x) - L(x) [N], bits, or None")
