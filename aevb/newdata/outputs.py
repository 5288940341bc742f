"""What a trained model says about new data, item by item, and how it is written: posterior
codes (encode), bounds per item (score, through the bound engine), reconstructions and decoded
codes (through aevb.sampling), one PNG per item in a folder that appears only when complete, and
tables per item (.npz, .npy, .csv) written atomically and read back (read_codes, codes_of).
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import zipfile
from pathlib import Path, PurePosixPath
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..bits import bits_per_dim, bpd_convention
from ..bounds import Bounds, eval_rows, evaluate_bounds
from ..data.base import Split
from ..data.cache import physical_memory
from ..units import format_bytes
from ..errors import DataError, DiskFullError
from ..images import png_bytes, to_images
from ..io import atomic_path, temporaries_of
from ..lock import RunLock, output_lock_path
from ..sampling import decode_means, eval_mode, model_device, model_dtype, reconstructions
from .checks import argument
from .results import ID, Codes, ItemTable, Scores, code_columns, flat_columns


# ------------------------------------------------------------------ what the model says
def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar with the time left on stderr (shown on a terminal when ``enabled``), or None."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="item", dynamic_ncols=True, disable=None, file=sys.stderr, leave=False)


def check_draws_fit(n: int, samples: int, latent_dim: int, memory: Optional[int] = None,
                    python: bool = True) -> None:
    """Refuse (DataError, before any work) draws z [n, samples, latent_dim] in float64 that would
    take more than half of ``memory`` (default: the machine's RAM), where they are held until the
    output is written. ``python``: name the argument as Python's ``samples``, else ``--samples``."""
    memory = physical_memory() if memory is None else memory
    need = 8 * n * samples * latent_dim
    if samples and memory and need > memory // 2:
        raise DataError(f"{samples} draws for each of {n:,} items of {latent_dim} latent dimensions make "
                        f"{format_bytes(need)} of codes, more than half of this machine's memory "
                        f"({format_bytes(memory)}); ask for fewer draws ({argument('samples', python)}), or encode "
                        "the data in parts")


def encode(model, split: Split, samples: int = 0, seed: int = 0, batch_size: Optional[int] = None,
           progress: bool = False, python: bool = True) -> Dict[str, np.ndarray]:
    """{"mu", "log_var"} [N, J] float64 (the Gaussian q(z|x) of each row: with stacked layers
    every layer's along the mean path; with a flow the Gaussian before it) and, with ``samples``
    > 0, "z" [N, samples, J] float64: draws z ~ q(z|x) (z = mu + sigma * eps, through the flow or
    the upper layers where the model has them) with eps from a CPU generator seeded with ``seed``. The encoder sees ``batch_size`` rows at a time from ``split.batches``
    (default: aevb.bounds.eval_rows, sized in bytes)."""
    n, j = len(split), int(model.latent_dim)
    check_draws_fit(n, int(samples), j, python=python)
    batch_size = batch_size or eval_rows(model)
    mu, lv = np.empty((n, j)), np.empty((n, j))
    z = np.empty((n, int(samples), j)) if samples else None
    gen = torch.Generator().manual_seed(int(seed))
    bar = progress_bar(n, "encoding", progress)
    i = 0
    try:
        with eval_mode(model):
            for xb in split.batches(batch_size, model_device(model)):
                m1, v1 = model.encoder_params(xb.to(model_dtype(model)))
                m, v = (t.double().cpu() for t in model.posterior_params(m1, v1))
                b = len(m)
                mu[i:i + b], lv[i:i + b] = m.numpy(), v.numpy()
                if samples:
                    eps = torch.randn(b, int(samples), j, generator=gen, dtype=torch.float64)
                    if model.closed_form_kl:  # z = mu + sigma * eps, in float64
                        z[i:i + b] = (m.unsqueeze(1) + torch.exp(0.5 * v).unsqueeze(1) * eps).numpy()
                    else:
                        zs = model.latent_sample(eps.to(m1), m1.unsqueeze(1), v1.unsqueeze(1)).z
                        z[i:i + b] = zs.double().cpu().numpy()
                i += b
                if bar is not None:
                    bar.update(b)
    finally:
        if bar is not None:
            bar.close()
    out = {"mu": mu, "log_var": lv}
    if z is not None:
        out["z"] = z
    return out


def score(model, split: Split, k: int, seed: int = 0, progress: bool = False, budget=None) -> Bounds:
    """The bound engine's per-row results (ELBO, L_k and its standard error, ...) for ``split``
    with k importance samples, seeded noise: the numbers ``aevb evaluate`` gives for the same rows."""
    kw = {} if budget is None else {"budget": budget}
    return evaluate_bounds(model, split, k=int(k), seed=seed, progress=progress, desc=f"L_{k}", **kw)


def encode_items(model, items, samples: int = 0, seed: int = 0, progress: bool = False,
                 python: bool = True) -> Codes:
    """:func:`encode` of ``items`` (an :class:`aevb.newdata.Items`) as :class:`Codes`, with their ids."""
    return Codes({ID: np.asarray(items.ids), **encode(model, items.split, samples, seed, progress=progress,
                                                      python=python)})


def score_columns(model, items, k: int, likelihood: str, seed: int = 0, progress: bool = False) -> Scores:
    """Per item of ``items``: "id", "elbo", "lk", "lk_se" (nats) and, where the data are discrete
    (aevb.bits.bpd_convention for their kind, levels and ``likelihood``), "bpd_elbo" and "bpd_lk"."""
    b = score(model, items.split, k, seed, progress)
    cols = {ID: np.asarray(items.ids), "elbo": b.elbo.numpy(), "lk": b.lk.numpy(), "lk_se": b.lk_se.numpy()}
    offset, _ = bpd_convention(items.kind, items.levels, likelihood)
    if offset is not None:
        cols["bpd_elbo"] = bits_per_dim(cols["elbo"], items.dim, offset)
        cols["bpd_lk"] = bits_per_dim(cols["lk"], items.dim, offset)
    return Scores(cols)


def reconstruction_blocks(model, split: Split, batch_size: Optional[int] = None,
                          progress: bool = False) -> Iterator[Tuple[int, Tensor]]:
    """(first row, reconstructions [B, D] on the CPU) for ``batch_size`` rows at a time:
    :func:`aevb.sampling.reconstructions` block by block, so memory does not grow with N."""
    bar = progress_bar(len(split), "reconstructing", progress)
    batch_size = batch_size or eval_rows(model)
    try:
        for i in range(0, len(split), batch_size):
            x = split.rows(i, i + batch_size)
            yield i, reconstructions(model, x, batch_size)
            if bar is not None:
                bar.update(len(x))
    finally:
        if bar is not None:
            bar.close()


# the advice of a refusal of codes: where a trained model's codes lie
CODES_ADVICE = "a trained model's codes lie within a few units of 0, where its prior N(0, I) puts them"


def check_codes(z, latent_dim: int, name: str = "z") -> Tensor:
    """``z`` as a float [N, J] tensor, refusing (one line naming ``name`` and the shapes) another
    width, another number of dimensions, no rows, NaN / infinite values, or values beyond the
    float32 range (they would reach the decoder as infinities)."""
    try:
        a = np.asarray(z.detach().cpu().numpy() if isinstance(z, Tensor) else z)
    except (ValueError, TypeError) as e:  # rows of different lengths, objects that are not numbers
        raise DataError(f"{name} is not an [N, {latent_dim}] array of numbers ({_one_line(e)})") from None
    if a.ndim == 1 and a.size == latent_dim:
        a = a.reshape(1, -1)
    if a.ndim != 2 or a.shape[1] != latent_dim:
        raise DataError(f"{name} has shape {tuple(a.shape)} but the run's codes are [N, {latent_dim}] "
                        f"(its latent dimension is {latent_dim})")
    if len(a) == 0:
        raise DataError(f"{name} holds no codes")
    if a.dtype.kind not in "biuf":
        raise DataError(f"{name} holds {a.dtype} values; codes are real numbers")
    a = a.astype(np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
        rows = np.flatnonzero(bad.any(1))
        raise DataError(f"{name} has {int(bad.sum())} NaN or infinite value(s) (first in row {int(rows[0])}); "
                        "codes must be finite")
    big = np.abs(a) > np.finfo(np.float32).max
    if big.any():
        r = int(np.flatnonzero(big.any(1))[0])
        raise DataError(f"{name} holds {a[r][big[r]][0]:.3g} in row {r}, beyond float32 (largest "
                        f"{np.finfo(np.float32).max:.3g}): the decoder cannot take it; {CODES_ADVICE}")
    return torch.from_numpy(a.astype(np.float32))


def decode(model, z, batch_size: Optional[int] = None, name: str = "z", first_row: int = 0) -> Tensor:
    """The mean of p(x|z) [N, D] on the CPU for codes ``z`` [N, J] (checked by :func:`check_codes`);
    codes so large that the decoder's output is not finite (it overflows) are refused in one line
    naming ``name`` and the row (counted from ``first_row``)."""
    codes = check_codes(z, int(model.latent_dim), name)
    x = decode_means(model, codes, batch_size)
    bad = ~torch.isfinite(x).all(1)
    if bad.any():
        r = int(torch.nonzero(bad)[0])
        raise DataError(f"{name}: the decoder overflows for {int(bad.sum())} code(s), its output not finite (first "
                        f"in row {first_row + r}, largest |value| {float(codes[r].abs().max()):.3g}); "
                        f"{CODES_ADVICE}")
    return x


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


def _one_line(e) -> str:
    return " ".join(str(e).split())


# ------------------------------------------------------------------ one PNG per item
# the longest file name (bytes) most file systems take, and the longest path the system opens
NAME_MAX, PATH_MAX = 255, 4096


def _safe_part(part: str) -> str:
    """One component of an item's identity as a file name: control characters (NUL, line breaks,
    tabs ...), which a file name cannot hold or shows badly, written as %XX."""
    return "".join(f"%{ord(c):02X}" if ord(c) < 32 or ord(c) == 127 else c for c in part)


def _fit_name(part: str, suffix: str = "") -> str:
    """``part`` + ``suffix``, shortened where it is longer than NAME_MAX bytes: its beginning,
    '~' and 12 hex digits of the SHA-256 of the whole part (distinct parts stay distinct)."""
    import hashlib

    whole = part + suffix
    if len(os.fsencode(whole)) <= NAME_MAX:
        return whole
    tag = "~" + hashlib.sha256(os.fsencode(part)).hexdigest()[:12] + suffix
    room = NAME_MAX - len(os.fsencode(tag))
    head = ""
    for c in part:
        if len(os.fsencode(head + c)) > room:
            break
        head += c
    return head + tag


def png_names(ids: Sequence[str], out: Optional[Path] = None) -> List[str]:
    """A file name under the output folder for each identity: the same relative path with the
    suffix .png (a path that would leave the folder keeps only its file name; control characters
    become %XX; a name over 255 bytes is shortened, keeping a hash of the whole). Refuses, before
    any work, two items that would share a name, an item whose PNG would be a folder of other
    items' PNGs, and (with ``out``) a path longer than the system opens."""
    names = []
    for i in ids:
        p = PurePosixPath(str(i))
        parts = [x for x in p.parts if x not in ("/", ".")]
        if p.is_absolute() or ".." in parts or not parts:
            parts = [p.name or "item"]
        *dirs, last = [_safe_part(x) for x in parts]
        q = PurePosixPath(last)
        stem = q.stem if q.suffix else last
        names.append("/".join([_fit_name(d) for d in dirs] + [_fit_name(stem, ".png")]))
    seen: Dict[str, str] = {}
    for i, n in zip(ids, names):
        if n in seen:
            raise DataError(f"two items would be written to {n} ({_shown(seen[n])} and {_shown(i)}); give files with "
                            "distinct names")
        seen[n] = i
    for n, i in seen.items():
        parts = n.split("/")
        for k in range(1, len(parts)):
            folder = "/".join(parts[:k])
            if folder in seen:
                raise DataError(f"the item {_shown(seen[folder])} would be written to {folder}, which the item "
                                f"{_shown(i)} needs as a folder ({n}); give files with distinct names")
    if out is not None:
        longest = max(names, key=lambda n: len(os.fsencode(n)))
        full = os.fsencode(os.path.join(os.path.abspath(out), longest))
        if len(full) >= PATH_MAX:
            raise DataError(f"the item {_shown(seen[longest])} makes a path of {len(full)} bytes under {out}, longer "
                            f"than the {PATH_MAX - 1} the system opens; give items with shorter names or a shorter "
                            "--out")
    return names


def _shown(item_id) -> str:
    """An identity in a message: quoted, its control characters escaped, at most 80 characters."""
    text = repr(str(item_id))
    return text if len(text) <= 80 else text[:60] + "..." + text[-17:]


# a folder of PNGs is written into a hidden sibling first: OUT -> .OUT.aevb-partial-PID
PARTIAL = ".aevb-partial-"


def stage_path(out: Path, pid: Optional[int] = None) -> Path:
    out = Path(out)
    return out.parent / f".{out.name}{PARTIAL}{os.getpid() if pid is None else pid}"


class PngFolder:
    """Write PNGs into a folder that appears complete: they go into a hidden sibling
    (:func:`stage_path`), which becomes ``out`` only when every file is written; when ``out``
    already exists (an empty folder, checked before the work) the files are moved into it, so
    the folder itself (a link to it, its permissions, a shell's current folder) is kept. On
    failure nothing is left. Use as a context manager (under :class:`OutputClaim`) and call
    :meth:`write`."""

    def __init__(self, out: Path, image_shape: Sequence[int], option: str = "--out"):
        self.out, self.shape, self.option = Path(out), tuple(image_shape), option
        self.stage = stage_path(self.out)

    def __enter__(self) -> "PngFolder":
        if self.stage.exists():
            shutil.rmtree(self.stage)
        self.stage.mkdir(parents=True)
        return self

    def write(self, names: Sequence[str], x: Tensor) -> None:
        for name, img in zip(names, to_images(x, self.shape)):
            path = self.stage / name
            data = png_bytes(img)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):  # named as the folder the user asked for
                    raise DiskFullError(self.out / name, len(data)) from None
                raise

    def __exit__(self, exc_type, *exc) -> bool:
        if exc_type is not None:
            shutil.rmtree(self.stage, ignore_errors=True)
            return False
        try:
            if self.out.is_dir() and not self.out.is_symlink():
                if any(self.out.iterdir()):
                    raise DataError(f"{self.option} {self.out} was filled by another program while this command "
                                    "worked; nothing was written into it: empty it or give a new folder")
                for entry in os.listdir(self.stage):
                    os.rename(self.stage / entry, self.out / entry)
                self.stage.rmdir()
            elif os.path.lexists(self.out):
                raise DataError(f"{self.option} {self.out} was made a file or a link by another program while this "
                                "command worked; nothing was written to it: give a new folder")
            else:
                os.rename(self.stage, self.out)
        except BaseException:
            shutil.rmtree(self.stage, ignore_errors=True)
            raise
        return False


def resolve_output(path, option: str = "--out") -> Path:
    """The real place of an output: links followed and ``.`` or ``..`` resolved, so that the work
    goes where the name points (a link to a folder stays a link to the folder that is written)."""
    real = Path(os.path.realpath(os.path.abspath(path)))
    if not real.name:
        raise DataError(f"{option} {path} is the root folder; give a folder under it")
    return real


def _size(p: Path) -> str:
    if p.is_dir():
        n = sum(1 for q in p.rglob("*") if q.is_file())
        return f"{n:,} file{'' if n == 1 else 's'}"
    try:
        return format_bytes(p.stat().st_size)
    except OSError:
        return "?"


def leftovers(out: Path) -> List[Path]:
    """What killed writers of ``out`` left beside it: folders of PNGs not yet complete
    (``.OUT.aevb-partial-PID``, of any process but this one) and the temporary files of atomic
    writes (``.OUT.XXXX.tmp``, and those of a .npy table's ids file) that no live writer holds.
    Look only while holding the output's claim (:class:`OutputClaim`): no other writer of
    ``out`` is at work then."""
    out = Path(out)
    found = []
    try:
        for p in sorted(out.parent.glob(f".{glob_escape(out.name)}{PARTIAL}*")):
            pid = p.name[len(out.name) + 1 + len(PARTIAL):]
            if pid.isdigit() and int(pid) != os.getpid() and p.is_dir() and not p.is_symlink():
                found.append(p)
    except OSError:
        pass
    found += temporaries_of(out)
    if out.suffix.lower() == ".npy":
        found += temporaries_of(ids_path(out))
    return found


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


class OutputClaim:
    """The one writer of an output file or folder (``aevb encode --out``, ``aevb reconstruct
    --data ... --out``): a lock file beside it (:func:`aevb.lock.output_lock_path`, freed by the
    system when its process ends, however it ends), so that a second command writing the same
    output is refused before its work, naming the first. Taking it removes what killed writers
    of the output left (:func:`leftovers`) and says so in one line through ``say``."""

    def __init__(self, out, say=None, option: str = "--out", shown=None):
        # ``shown``: the output as the user named it (a link, '.'), for the refusal
        self.out, self.say, self.option = Path(out), say, option
        self.lock = RunLock(Path(shown if shown is not None else out), output_lock_path(self.out))
        self.removed: List[str] = []

    def __enter__(self) -> "OutputClaim":
        self.lock.acquire("write")
        try:
            for p in leftovers(self.out):
                what = f"{p.name} ({_size(p)})"
                try:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
                except OSError as e:
                    raise DataError(f"{self.option} {self.out}: {p}, left by a writer that was killed, cannot be "
                                    f"removed ({e.strerror or e}); remove it and run the command again") from None
                self.removed.append(what)
            if self.removed and self.say is not None:
                self.say(f"removed what a killed writer of {self.out} left beside it: {', '.join(self.removed)}")
        except BaseException:
            self.lock.release()
            raise
        return self

    def __exit__(self, *exc) -> bool:
        self.lock.release()
        return False


def check_png_folder(out: Path, option: str = "--out") -> None:
    """Refuse, before any work, an output folder that exists and is not empty."""
    out = Path(out)
    if out.exists() and out.is_dir() and any(out.iterdir()):
        raise DataError(f"{option} {out} exists and is not empty; give a new or empty folder")


# ------------------------------------------------------------------ tables per item
TABLE_SUFFIXES = (".npz", ".npy", ".csv")
# a .npy file holds one float matrix; the ids of its rows go to a text file beside it
IDS_SUFFIX = ".ids.txt"


# rows of a CSV file formatted and written at a time
CSV_BLOCK = 1000


def ids_path(path) -> Path:
    """The text file beside a ``.npy`` table that holds the ids of its rows, one per line:
    ``codes.npy`` -> ``codes.ids.txt``."""
    path = Path(path)
    return path.with_name(path.stem + IDS_SUFFIX)


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
        broken = next((i for i in ids if "\n" in i or "\r" in i), None)
        if broken is not None:
            raise DataError(f"the item {broken!r} has a line break in its id, which a .npy table's ids file "
                            "(one id per line) cannot hold; write a .npz or .csv file")
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
