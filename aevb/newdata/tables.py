"""Tables per item (.npz, .npy, .csv) written atomically, CSV cells a spreadsheet would run as
formulas escaped, and codes read back (read_codes; codes_of takes whatever the Python API is
given as codes).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
from torch import Tensor

from ..errors import DataError
from ..io import atomic_path
from .files import ids_path
from .outputs import _one_line, check_codes
from .results import ID, ItemTable, code_columns, flat_columns


def codes_of(z, latent_dim: int, name: str = "z") -> Tuple[Optional[List[str]], Tensor]:
    """(ids or None, codes [N, J]) of what the Python API takes as codes: an array or tensor, the
    result of ``run.encode`` (its ``mu``), a pandas DataFrame of its ``to_pandas()`` (its
    ``mu_j`` columns, else every column but ``id``), or a file as ``aevb encode`` writes it
    (:func:`read_codes`)."""
    if isinstance(z, (str, os.PathLike)):
        return read_codes(z, latent_dim, f"{name} ({z})")
    if isinstance(z, ItemTable):
        if "mu" not in z:
            raise DataError(f"{name} is a table without codes (its columns: {', '.join(z)}); give the result of "
                            "run.encode or its mu")
        return z.ids, check_codes(z["mu"], latent_dim, f"{name}.mu")
    if _is_data_frame(z):
        header = [str(c) for c in z.columns]
        cols = code_columns(header)
        try:
            values = z.iloc[:, cols].to_numpy(dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise DataError(f"{name}: the columns {', '.join(header[j] for j in cols[:3])}"
                            f"{' ...' if len(cols) > 3 else ''} are not all numbers ({_one_line(e)})") from None
        ids = [str(i) for i in z[ID]] if ID in header else None
        return ids, check_codes(values.reshape(len(z), len(cols)), latent_dim, name)
    return None, check_codes(z, latent_dim, name)


def _is_data_frame(x) -> bool:
    return type(x).__module__.split(".")[0] == "pandas" and hasattr(x, "columns") and hasattr(x, "iloc")


# ------------------------------------------------------------------ tables per item
TABLE_SUFFIXES = (".npz", ".npy", ".csv")
# a .npy file holds one float matrix; the ids of its rows go to a text file beside it


# rows of a CSV file formatted and written at a time
CSV_BLOCK = 1000


def check_table_path(path, option: str = "--out") -> None:
    """Refuse, before any work, a ``.npy`` table whose ids file (:func:`ids_path`) cannot be
    written: a folder, or a file that is not writable."""
    path = Path(path)
    if path.suffix.lower() != ".npy":
        return
    ids = ids_path(path)
    if ids.is_dir():
        raise DataError(f"{option} {path}: the ids of its rows go to {ids} beside it, which is a folder; "
                        f"choose another {option}")
    if ids.exists() and not os.access(ids, os.W_OK):
        raise DataError(f"{option} {path}: the ids of its rows go to {ids} beside it, which cannot be written "
                        f"(permission denied); choose another {option}")


def matrix_note(path, table) -> str:
    """What a ``.npy`` table holds, for the line that says it was written: '' for other files."""
    path = Path(path)
    if path.suffix.lower() != ".npy":
        return ""
    table = table if isinstance(table, ItemTable) else ItemTable(table)
    names, m = table.matrix()
    shown = names if len(names) <= 6 else names[:3] + ["..."] + names[-1:]
    return f" (a float matrix {list(m.shape)}: {', '.join(shown)}; ids in {ids_path(path)})"


def check_ids_fit(path, ids) -> None:
    """Refuse (DataError) item ``ids`` that the table file ``path`` cannot hold: a .npy table keeps
    its ids one per line beside it, so none may have a line break. Commands call it as soon as the
    items are read, before any work; :func:`write_table` checks again."""
    if Path(path).suffix.lower() != ".npy":
        return
    broken = next((i for i in ids if "\n" in str(i) or "\r" in str(i)), None)
    if broken is not None:
        raise DataError(f"the item {broken!r} has a line break in its id, which a .npy table's ids file "
                        "(one id per line) cannot hold; write a .npz or .csv file")


def write_table(path, table) -> Path:
    """Write a table per item (an :class:`ItemTable`, or a dict of columns of N rows) atomically,
    nothing left if it fails: ``.npz`` (one named array per column), ``.npy`` (one float matrix
    [N, C], :meth:`ItemTable.matrix`: the posterior means of codes, the bounds of scores; the ids
    in the text file :func:`ids_path` beside it, one per line) or ``.csv`` (a header; a column
    [N, J] becomes NAME_0 .. NAME_{J-1}, [N, S, J] NAME_s_j)."""
    path = Path(path)
    table = table if isinstance(table, ItemTable) else ItemTable(table)
    columns = dict(table.items())
    ext = path.suffix.lower()
    if ext == ".npz":
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **columns)
    elif ext == ".npy":
        ids = table.ids
        check_ids_fit(path, ids)
        _, matrix = table.matrix()
        with atomic_path(ids_path(path)) as tmp_ids, atomic_path(path) as tmp:
            tmp_ids.write_text("".join(i + "\n" for i in ids), encoding="utf-8", errors="surrogateescape")
            with open(tmp, "wb") as fh:
                np.save(fh, matrix)
    elif ext == ".csv":
        names, cols = flat_columns(columns)
        with atomic_path(path) as tmp:
            with open(tmp, "w", encoding="utf-8", errors="surrogateescape", newline="") as fh:
                fh.write(",".join(names) + "\n")
                for r0 in range(0, len(cols[0]), CSV_BLOCK):  # a block of lines at a time: memory stays flat
                    fh.write("".join(",".join(_cell(c[r, j]) for c in cols for j in range(c.shape[1])) + "\n"
                                     for r in range(r0, min(r0 + CSV_BLOCK, len(cols[0])))))
    else:
        raise DataError(f"{path}: use a .npz, .npy or .csv file name")
    return path


# what starts a formula in a spreadsheet (OWASP's "CSV injection"): a text cell beginning with one
# of these gets a leading apostrophe, as does one beginning with an apostrophe, which
# unescape_cell takes off again (so every text reads back as it was)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


def escape_cell(text: str) -> str:
    """A text cell that a spreadsheet shows as text: a leading apostrophe where it would be run
    as a formula (or where it begins with an apostrophe itself)."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def unescape_cell(text: str) -> str:
    """The text of a cell written by :func:`escape_cell`."""
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_STARTS) else text


def _cell(v) -> str:
    if isinstance(v, (str, np.str_)):
        s = escape_cell(str(v))
        return '"' + s.replace('"', '""') + '"' if any(c in s for c in ',"\n\r') else s
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return repr(float(v))


def read_codes(path, latent_dim: int, name: Optional[str] = None) -> Tuple[List[str], Tensor]:
    """(ids, codes [N, J]) from a file: ``aevb encode``'s output (.npz / .csv: its ``mu``, with its
    ``id``; .npy: the matrix of posterior means, with the ids of its ids file when there is one;
    the structured .npy of earlier versions: its ``mu`` and ``id``), or a plain [N, J] array (.npy,
    .npz with one array, .csv of numbers with or without a header). Another width or NaN raise
    DataError naming the file (as ``name``: ``--z FILE`` by default) and the shapes."""
    import csv

    path = Path(path)
    name = name or f"--z {path}"
    if not path.is_file():
        raise DataError(f"{name}: not a file, a folder" if path.is_dir() else f"{name}: file not found")
    ext = path.suffix.lower()
    ids = None
    try:
        if ext == ".npz" and not zipfile.is_zipfile(path):
            raise DataError(f"{name} is not a .npz file (a zip archive of arrays, as numpy.savez writes); give the "
                            "file aevb encode wrote, or an [N, J] array in a .npz, .npy or .csv file")
        if ext == ".npy":
            with open(path, "rb") as fh:
                if fh.read(6) != b"\x93NUMPY":
                    raise DataError(f"{name} is not a .npy file (numpy's format, as numpy.save writes); give the "
                                    "file aevb encode wrote, or an [N, J] array in a .npz, .npy or .csv file")
        if ext == ".npz":
            with np.load(path, allow_pickle=False) as f:
                keys = list(f.files)
                key = "mu" if "mu" in keys else ("z" if "z" in keys else None)
                if key is None:
                    arrays = [k for k in keys if k != ID]
                    if len(arrays) != 1:
                        raise DataError(f"{name}: holds {', '.join(keys)}; give a file with 'mu' (aevb encode's "
                                        "output) or a single [N, J] array")
                    key = arrays[0]
                z = f[key]
                ids = [str(i) for i in f[ID]] if ID in keys else None
        elif ext == ".npy":
            z = np.load(path, allow_pickle=False)
            if z.dtype.names:
                if "mu" not in z.dtype.names:
                    raise DataError(f"{name}: a structured array without a 'mu' field")
                ids = [str(i) for i in z[ID]] if ID in z.dtype.names else None
                z = z["mu"]
            else:
                ids = _read_ids(path, len(z) if z.ndim else 0, name)
        elif ext == ".csv":
            with open(path, newline="", encoding="utf-8", errors="surrogateescape") as fh:
                rows = [r for r in csv.reader(fh) if r]
            if not rows:
                raise DataError(f"{name}: the file is empty")
            header = rows[0]
            try:
                [float(v) for v in header]
                body, header = rows, None
            except ValueError:
                body = rows[1:]
            if header is not None:
                cols = code_columns(header)
                if ID in header:
                    ids = [unescape_cell(r[header.index(ID)]) for r in body]
            else:
                cols = list(range(len(rows[0])))
            z = np.array([[float(r[j]) for j in cols] for r in body], dtype=np.float64).reshape(len(body), len(cols))
        else:
            raise DataError(f"{name}: use a .npz, .npy or .csv file")
    except (ValueError, OSError, EOFError, IndexError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        if isinstance(e, DataError):
            raise
        if isinstance(e, ValueError) and "pickle" in str(e):
            raise DataError(f"{name} holds Python objects (pickled), which aevb never loads (they can run code); "
                            "codes are arrays of numbers") from None
        raise DataError(f"{name} could not be read as codes ({_one_line(e)})") from None
    codes = check_codes(z, latent_dim, name)
    if ids is None or len(ids) != len(codes):
        ids = [str(i) for i in range(len(codes))]
    return ids, codes


def _read_ids(path: Path, n: int, name: str) -> Optional[List[str]]:
    """The ids of the rows of a ``.npy`` table from its ids file, or None when there is none;
    refuses one that lists another number of items (it belongs to another matrix)."""
    ids_file = ids_path(path)
    if not ids_file.is_file():
        return None
    text = ids_file.read_text(encoding="utf-8", errors="surrogateescape")
    # one id per line (only \n ends a line: an id may hold any other character), \r\n read as \n
    ids = [i[:-1] if i.endswith("\r") else i for i in (text[:-1] if text.endswith("\n") else text).split("\n")]
    ids = ids if text else []
    if len(ids) != n:
        raise DataError(f"{name}: {ids_file} beside it lists {len(ids)} id{'' if len(ids) == 1 else 's'} for {n} "
                        f"rows; it belongs to another file: remove it (the rows are then named 0..{n - 1}) or "
                        "write both again")
    return ids
