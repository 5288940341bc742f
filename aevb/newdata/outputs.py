"""What a trained model says about new data, item by item, and how it is written: posterior
codes (encode), bounds per item (score, through the bound engine), reconstructions and decoded
codes (through aevb.sampling), one PNG per item in a folder that appears only when complete, and
tables per item (.npz, .npy, .csv) written atomically.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..bits import bits_per_dim, bpd_convention
from ..bounds import Bounds, eval_rows, evaluate_bounds
from ..data.base import Split
from ..data.cache import format_size, physical_memory
from ..errors import DataError
from ..images import png_bytes, to_images
from ..io import atomic_path
from ..sampling import decode_means, eval_mode, model_device, model_dtype, reconstructions


# ------------------------------------------------------------------ what the model says
def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar with the time left on stderr (shown on a terminal when ``enabled``), or None."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="item", dynamic_ncols=True, disable=None, file=sys.stderr, leave=False)


def check_draws_fit(n: int, samples: int, latent_dim: int, memory: Optional[int] = None) -> None:
    """Refuse (DataError, before any work) draws z [n, samples, latent_dim] in float64 that would
    take more than half of ``memory`` (default: the machine's RAM), where they are held until the
    output is written."""
    memory = physical_memory() if memory is None else memory
    need = 8 * n * samples * latent_dim
    if samples and memory and need > memory // 2:
        raise DataError(f"{samples} draws for each of {n:,} items of {latent_dim} latent dimensions make "
                        f"{format_size(need)} of codes, more than half of this machine's memory "
                        f"({format_size(memory)}); ask for fewer draws (--samples), or encode the data in parts")


def encode(model, split: Split, samples: int = 0, seed: int = 0, batch_size: Optional[int] = None,
           progress: bool = False) -> Dict[str, np.ndarray]:
    """{"mu", "log_var"} [N, J] float64 (the Gaussian q(z|x) of each row: with stacked layers
    every layer's along the mean path; with a flow the Gaussian before it) and, with ``samples``
    > 0, "z" [N, samples, J] float64: draws z ~ q(z|x) (z = mu + sigma * eps, through the flow or
    the upper layers where the model has them) with eps from a CPU generator seeded with ``seed``. The encoder sees ``batch_size`` rows at a time from ``split.batches``
    (default: aevb.bounds.eval_rows, sized in bytes)."""
    n, j = len(split), int(model.latent_dim)
    check_draws_fit(n, int(samples), j)
    batch_size = batch_size or eval_rows(model)
    mu, lv = np.empty((n, j)), np.empty((n, j))
    z = np.empty((n, int(samples), j)) if samples else None
    gen = torch.Generator().manual_seed(int(seed))
    bar = progress_bar(n, "encoding", progress)
    i = 0
    try:
        with eval_mode(model):
            for xb in split.batches(batch_size, model_device(model)):
                m1, v1 = model.encode(xb.to(model_dtype(model)))
                m, v = (t.double().cpu() for t in model.posterior_params(m1, v1))
                b = len(m)
                mu[i:i + b], lv[i:i + b] = m.numpy(), v.numpy()
                if samples:
                    eps = torch.randn(b, int(samples), j, generator=gen, dtype=torch.float64)
                    if model.closed_form_kl:  # z = mu + sigma * eps, in float64
                        z[i:i + b] = (m.unsqueeze(1) + torch.exp(0.5 * v).unsqueeze(1) * eps).numpy()
                    else:
                        zs = model.sample_posterior(eps.to(m1), m1.unsqueeze(1), v1.unsqueeze(1))[0]
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


def score_columns(model, items, k: int, likelihood: str, seed: int = 0, progress: bool = False) -> Dict[str, np.ndarray]:
    """Per item of ``items``: "id", "elbo", "lk", "lk_se" (nats) and, where the data are discrete
    (aevb.bits.bpd_convention for their kind, levels and ``likelihood``), "bpd_elbo" and "bpd_lk"."""
    b = score(model, items.split, k, seed, progress)
    cols = {"id": np.asarray(items.ids), "elbo": b.elbo.numpy(), "lk": b.lk.numpy(), "lk_se": b.lk_se.numpy()}
    offset, _ = bpd_convention(items.kind, items.levels, likelihood)
    if offset is not None:
        cols["bpd_elbo"] = bits_per_dim(cols["elbo"], items.dim, offset)
        cols["bpd_lk"] = bits_per_dim(cols["lk"], items.dim, offset)
    return cols


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


def check_codes(z, latent_dim: int, name: str = "the codes") -> Tensor:
    """``z`` as a float [N, J] tensor, refusing (one line naming ``name`` and the shapes) another
    width, another number of dimensions, no rows, or NaN / infinite values."""
    a = np.asarray(z.detach().cpu().numpy() if isinstance(z, Tensor) else z)
    if a.ndim == 1 and a.size == latent_dim:
        a = a.reshape(1, -1)
    if a.ndim != 2 or a.shape[1] != latent_dim:
        raise DataError(f"{name} has shape {tuple(a.shape)} but the run's codes are [N, {latent_dim}] "
                        f"(its latent dimension is {latent_dim})")
    if len(a) == 0:
        raise DataError(f"{name} holds no codes")
    if not np.issubdtype(a.dtype, np.number):
        raise DataError(f"{name} holds {a.dtype} values; codes are numbers")
    bad = ~np.isfinite(a.astype(np.float64))
    if bad.any():
        rows = np.flatnonzero(bad.any(1))
        raise DataError(f"{name} has {int(bad.sum())} NaN or infinite value(s) (first in row {int(rows[0])}); "
                        "codes must be finite")
    return torch.from_numpy(a.astype(np.float32))


def decode(model, z, batch_size: Optional[int] = None) -> Tensor:
    """The mean of p(x|z) [N, D] on the CPU for codes ``z`` [N, J] (checked by :func:`check_codes`)."""
    return decode_means(model, check_codes(z, int(model.latent_dim)), batch_size)


# ------------------------------------------------------------------ one PNG per item
def png_names(ids: Sequence[str]) -> List[str]:
    """A file name under the output folder for each identity: the same relative path with the
    suffix .png (a path that would leave the folder keeps only its file name); refuses two items
    that would share a name."""
    names = []
    for i in ids:
        p = Path(str(i))
        if p.is_absolute() or ".." in p.parts or not p.parts:
            p = Path(p.name or "item")
        names.append(p.with_suffix(".png").as_posix() if p.suffix else f"{p.as_posix()}.png")
    seen: Dict[str, str] = {}
    for i, n in zip(ids, names):
        if n in seen:
            raise DataError(f"two items would be written to {n} ({seen[n]} and {i}); give files with distinct names")
        seen[n] = i
    return names


class PngFolder:
    """Write PNGs into a new folder atomically: they go into a hidden sibling, which becomes
    ``out`` only when every file is written (``out`` may exist if empty); on failure nothing is
    left. Use as a context manager and call :meth:`write`."""

    def __init__(self, out: Path, image_shape: Sequence[int]):
        self.out, self.shape = Path(out), tuple(image_shape)
        self.stage = self.out.parent / f".{self.out.name}.aevb-partial-{os.getpid()}"

    def __enter__(self) -> "PngFolder":
        if self.stage.exists():
            shutil.rmtree(self.stage)
        self.stage.mkdir(parents=True)
        return self

    def write(self, names: Sequence[str], x: Tensor) -> None:
        for name, img in zip(names, to_images(x, self.shape)):
            path = self.stage / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png_bytes(img))

    def __exit__(self, exc_type, *exc) -> bool:
        if exc_type is not None:
            shutil.rmtree(self.stage, ignore_errors=True)
            return False
        if self.out.is_dir():
            self.out.rmdir()  # checked empty before the work
        os.rename(self.stage, self.out)
        return False


def check_png_folder(out: Path, option: str = "--out") -> None:
    """Refuse, before any work, an output folder that exists and is not empty."""
    out = Path(out)
    if out.exists() and out.is_dir() and any(out.iterdir()):
        raise DataError(f"{option} {out} exists and is not empty; give a new or empty folder")


# ------------------------------------------------------------------ tables per item
TABLE_SUFFIXES = (".npz", ".npy", ".csv")


# rows of a CSV file formatted and written at a time
CSV_BLOCK = 1000


def write_table(path, columns: Dict[str, np.ndarray]) -> Path:
    """Write per-item columns atomically (nothing is left if it fails): ``.npz`` (one array per
    column), ``.npy`` (a structured array; a column [N, ...] becomes a field of that shape) or
    ``.csv`` (a header; a column [N, J] becomes NAME_0 .. NAME_{J-1}, [N, S, J] NAME_s_j)."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext == ".npz":
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **columns)
    elif ext == ".npy":
        dt = [(k, v.dtype if v.dtype.kind != "U" else v.dtype, v.shape[1:]) for k, v in columns.items()]
        arr = np.empty(len(next(iter(columns.values()))), dtype=dt)
        for k, v in columns.items():
            arr[k] = v
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, arr)
    elif ext == ".csv":
        names, cols = [], []
        for k, v in columns.items():
            flat = v.reshape(len(v), -1)
            if v.ndim == 1:
                names.append(k)
            else:
                names += [f"{k}_" + "_".join(map(str, ix)) for ix in np.ndindex(*v.shape[1:])]
            cols.append(flat)
        with atomic_path(path) as tmp:
            with open(tmp, "w", encoding="utf-8", newline="") as fh:
                fh.write(",".join(names) + "\n")
                for r0 in range(0, len(cols[0]), CSV_BLOCK):  # a block of lines at a time: memory stays flat
                    fh.write("".join(",".join(_cell(c[r, j]) for c in cols for j in range(c.shape[1])) + "\n"
                                     for r in range(r0, min(r0 + CSV_BLOCK, len(cols[0])))))
    else:
        raise DataError(f"{path}: use a .npz, .npy or .csv file name")
    return path


def _cell(v) -> str:
    if isinstance(v, (str, np.str_)):
        s = str(v)
        return '"' + s.replace('"', '""') + '"' if any(c in s for c in ',"\n') else s
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return repr(float(v))


def read_codes(path, latent_dim: int) -> Tuple[List[str], Tensor]:
    """(ids, codes [N, J]) from a file: ``aevb encode``'s output (.npz / .npy / .csv: its ``mu``,
    with its ``id``), or a plain [N, J] array (.npy, .npz with one array, .csv of numbers with or
    without a header). Another width or NaN raise DataError naming the file and the shapes."""
    import csv

    path = Path(path)
    name = f"--z {path}"
    if not path.is_file():
        raise DataError(f"{name}: file not found")
    ext = path.suffix.lower()
    ids = None
    try:
        if ext == ".npz":
            with np.load(path, allow_pickle=False) as f:
                keys = list(f.files)
                key = "mu" if "mu" in keys else ("z" if "z" in keys else None)
                if key is None:
                    arrays = [k for k in keys if k != "id"]
                    if len(arrays) != 1:
                        raise DataError(f"{name}: holds {', '.join(keys)}; give a file with 'mu' (aevb encode's "
                                        "output) or a single [N, J] array")
                    key = arrays[0]
                z = f[key]
                ids = [str(i) for i in f["id"]] if "id" in keys else None
        elif ext == ".npy":
            z = np.load(path, allow_pickle=False)
            if z.dtype.names:
                if "mu" not in z.dtype.names:
                    raise DataError(f"{name}: a structured array without a 'mu' field")
                ids = [str(i) for i in z["id"]] if "id" in z.dtype.names else None
                z = z["mu"]
        elif ext == ".csv":
            with open(path, newline="") as fh:
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
                cols = [j for j, h in enumerate(header) if h.startswith("mu_")] or \
                       [j for j, h in enumerate(header) if h != "id"]
                if "id" in header:
                    ids = [r[header.index("id")] for r in body]
            else:
                cols = list(range(len(rows[0])))
            z = np.array([[float(r[j]) for j in cols] for r in body], dtype=np.float64).reshape(len(body), len(cols))
        else:
            raise DataError(f"{name}: use a .npz, .npy or .csv file")
    except (ValueError, OSError, EOFError, IndexError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{name} could not be read as codes ({' '.join(str(e).split())})") from None
    codes = check_codes(z, latent_dim, name)
    if ids is None or len(ids) != len(codes):
        ids = [str(i) for i in range(len(codes))]
    return ids, codes
