"""Evaluation of a trained run, and the evaluation result schema.

:func:`evaluate_run` measures a run's split with the bound engine (aevb.bounds: the ELBO, the
importance-weighted bound L_k and its standard error, KL per unit, active units) and returns the
versioned result that ``aevb evaluate`` writes as ``RUN/evaluation*.json``. The same module reads
those files back (:func:`read_evaluation`, :func:`run_evaluations`, :func:`headline`) for the
report, the explorer and the tests, so that writer and readers cannot disagree on a key.

All values are nats per datapoint (summed over the D data dimensions); bits per dimension follow
the convention that :func:`bpd_convention` states for the data and likelihood.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .bits import LN2, bits_per_dim, bpd_convention  # noqa: F401 (read from here too)
from .bounds import ACTIVE_UNIT_THRESHOLD, Bounds, active_mask, active_unit_variances, evaluate_bounds
from .data.base import binarized
from .devices import check_precision, effective_precision, precision_context, resolve_device
from .errors import RunError
from .io import atomic_path, atomic_write_text
from .runs import Run
from .version import __version__

# The result schema: RUN/evaluation*.json holds "format": EVALUATION_FORMAT and "version".
EVALUATION_FORMAT = "aevb-evaluation"
EVALUATION_VERSION = 1


# ------------------------------------------------------------------------- a run
def _stats(v: Tensor) -> Dict[str, float]:
    v = v.double()
    se = float(v.std(unbiased=True) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "se": se}


def summarize(b: Bounds, dim: int, kind: str, levels: Optional[int], likelihood: str,
              threshold: float = ACTIVE_UNIT_THRESHOLD, layer_sizes: Optional[List[int]] = None) -> dict:
    """The JSON-able summary of :class:`Bounds` (means, standard errors, bpd, diagnostics);
    with stacked latents (``layer_sizes``, bottom first) also the KL and active units per layer."""
    elbo = _stats(b.elbo)
    lk = _stats(b.lk)
    offset, convention = bpd_convention(kind, levels, likelihood)
    var = active_unit_variances(b.mu)
    active = active_mask(var, threshold)
    out = {
        "se_meaning": "standard error of the mean over the datapoints (std / sqrt(n))",
        "n": int(len(b.lk)), "dim": int(dim), "latent_dim": int(b.mu.shape[-1]), "k": b.k,
        "elbo": {**elbo, "log_px_given_z": float(b.log_px_given_z.mean()), "kl": float(b.kl.mean()),
                 "estimator": f"E_q[log p(x|z)] averaged over the same {b.k} sample(s) per datapoint, "
                              + ("KL(q(z|x) || p(z)) in closed form" if b.kl_per_dim is not None else
                                 "KL(q(z|x) || p(z)) by Monte Carlo over the same samples (no closed form "
                                 "with a flow posterior or a learned prior)")},
        "lk": {**lk, "k": b.k, "gap_to_elbo": lk["mean"] - elbo["mean"]},
        "loss": -elbo["mean"],
        "iw_bound": lk["mean"] if b.k > 1 else None,  # headline scalar for `aevb report`
        "bits_per_dim": None if offset is None else {
            "elbo": bits_per_dim(elbo["mean"], dim, offset), "lk": bits_per_dim(lk["mean"], dim, offset),
            "lk_se": lk["se"] / (dim * LN2)},
        "bits_per_dim_convention": convention,
        "kl_per_dim": None if b.kl_per_dim is None else [float(v) for v in b.kl_per_dim.mean(0)],
        "active_units": int(active.sum()),
        "active_unit_threshold": threshold,
        "active_unit_variance": [float(v) for v in var],
        "batch_size": b.batch_size, "chunk": b.chunk, "seconds": b.seconds,
    }
    if layer_sizes:
        per_layer = active.long().split([int(s) for s in layer_sizes])
        out["layers"] = {"sizes": [int(s) for s in layer_sizes],
                         "kl": [float(v) for v in b.kl_layers.mean(0)] if b.kl_layers is not None else None,
                         "active_units": [int(a.sum()) for a in per_layer]}
    return out


def split_data(run, split: str, seed: int, data=None):
    """(x, y, kind, levels, note) of a run's split, binarized once with ``seed`` when the data set
    uses dynamic binarization (one fixed draw, the same for every k, so bounds are comparable)."""
    data = data if data is not None else run.load_data()
    s = data.split(split)
    x, kind, levels, note = s, data.kind, data.levels, None
    if data.dynamic_binarization:
        x = binarized(s, torch.Generator().manual_seed(int(seed)))
        kind, levels = "binary", 2
        note = (f"dynamically binarized data: the {split} split was binarized once, x ~ Bernoulli(x) with "
                f"seed {seed}, and that fixed draw is used for every sample and every k")
    return x, s.y, kind, levels, note


def evaluate_run(run, split: str = "test", k: int = 1, batch_size: Optional[int] = None,
                 chunk: Optional[int] = None, seed: int = 0, device: Union[str, torch.device] = "cpu",
                 progress: bool = False, budget: Optional[int] = None, compile: bool = False,
                 per_datapoint: bool = False, data=None, check=None, limit: Optional[int] = None,
                 checkpoint: str = "last", precision: str = "fp32") -> dict:
    """Evaluate a run (``aevb.runs.Run`` or its folder) on one split (its first ``limit``
    datapoints when given: a quicker estimate, said in the result); returns the summary dict.
    ``checkpoint``: the model of the run's ``last`` or ``best`` checkpoint (the result names it
    and its epoch). ``precision``: ``bf16`` runs the networks in bfloat16 autocast (faster for
    large MLPs and conv networks on CPUs whose bfloat16 products outrun float32's; the bounds are
    still summed in float32, and the result says which was used).

    ``check(model, x)``, if given, is called once the model and data are loaded and before the
    evaluation starts (e.g. to print an estimate of its cost, or to refuse it by raising).

    With ``per_datapoint=True`` the dict also holds ``"per_datapoint"``: numpy arrays ``index``,
    ``label`` (or None), ``elbo``, ``log_px_given_z``, ``kl``, ``lk`` (not JSON; pop it first).
    """
    check_precision(precision)
    run = run if isinstance(run, Run) else Run(run)
    dev = resolve_device(device) if isinstance(device, str) else device
    loaded = run.open_model(dev, checkpoint)
    model = loaded.model
    x, y, kind, levels, note = split_data(run, split, seed, data)
    n_split = len(x)
    if limit is not None and limit < n_split:
        x, y = x.subset(np.arange(int(limit))), None if y is None else y[:int(limit)]
    if x.dim != model.data_dim:
        raise RunError(f"the {split} split has {x.dim} values per datapoint but the run's model "
                       f"expects {model.data_dim}; check the run's data set and --data-dir")
    with precision_context(dev, precision):  # (the check's estimate times a pass in it too)
        if check is not None:
            check(model, x)
        b = evaluate_bounds(model, x, k, batch_size, chunk, seed, progress, budget, compile,
                            desc=f"L_{k} on {split}")
    out = {"format": EVALUATION_FORMAT, "version": EVALUATION_VERSION, "aevb_version": __version__, "run": str(run.path),
           "split": split, "datapoints": len(x), "split_datapoints": n_split,
           "dataset": run.config.data.dataset, "checkpoint": loaded.checkpoint, "epoch": loaded.epoch,
           "likelihood": run.config.model.likelihood, "seed": int(seed), "device": str(dev),
           "precision": effective_precision(dev, precision),
           "torch_version": torch.__version__,
           "units": "nats per datapoint (summed over the data dimensions); loss = -ELBO"}
    out.update(summarize(b, x.dim, kind, levels, run.config.model.likelihood,
                         layer_sizes=model.layer_sizes if len(model.layer_sizes) > 1 else None))
    out["binarization"] = note
    if per_datapoint:
        out["per_datapoint"] = {
            "index": np.arange(len(x), dtype=np.int64),
            "label": None if y is None else y.cpu().numpy().astype(np.int64),
            "elbo": b.elbo.numpy(), "log_px_given_z": b.log_px_given_z.numpy(), "kl": b.kl.numpy(),
            "lk": b.lk.numpy()}
    return out


def write_per_datapoint(path: Union[str, Path], rows: dict) -> Path:
    """Write per-datapoint rows atomically: ``.csv`` (a header line, one row per datapoint) or
    ``.npy`` (a structured array with the same fields). Other extensions raise ValueError."""
    path = Path(path)
    fields = [f for f in ("index", "label", "elbo", "log_px_given_z", "kl", "lk") if rows.get(f) is not None]
    ext = path.suffix.lower()
    if ext == ".csv":
        cols = [rows[f] for f in fields]
        lines = [",".join(fields)]
        for vals in zip(*cols):
            lines.append(",".join(str(int(v)) if f in ("index", "label") else repr(float(v))
                                  for f, v in zip(fields, vals)))
        atomic_write_text(path, "\n".join(lines) + "\n")
    elif ext == ".npy":
        dt = [(f, np.int64 if f in ("index", "label") else np.float64) for f in fields]
        arr = np.empty(len(rows["index"]), dtype=dt)
        for f in fields:
            arr[f] = rows[f]
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, arr)
    else:
        raise ValueError(f"--per-datapoint {path}: use a .csv or .npy file name")
    return path


def default_output(run_path: Union[str, Path], split: str, k: int, limit: Optional[int] = None,
                   checkpoint: str = "last") -> Path:
    """RUN/evaluation[-best][-SPLIT][-kK][-firstN].json: the best checkpoint is named (the last is
    the default), the split unless it is 'test', k unless it is 1, N when only the first N
    datapoints were evaluated."""
    name = ("evaluation" + ("" if checkpoint == "last" else f"-{checkpoint}") + ("" if split == "test" else f"-{split}")
            + ("" if k == 1 else f"-k{k}") + ("" if limit is None else f"-first{limit}"))
    return Path(run_path) / f"{name}.json"


# ------------------------------------------------------------------------- reading results
def read_evaluation(path: Union[str, Path]) -> dict:
    """The evaluation result in ``path``, checked against the schema; RunError says what is
    wrong with a file that is not one (unreadable, not JSON, another format or a newer version)."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise RunError(f"{path} could not be read: {' '.join(str(e).split())}") from None
    if not isinstance(d, dict) or d.get("format") != EVALUATION_FORMAT:
        raise RunError(f"{path} is not an aevb evaluation (no \"format\": \"{EVALUATION_FORMAT}\")")
    version = d.get("version")
    if not isinstance(version, int) or version > EVALUATION_VERSION:
        raise RunError(f"{path} has evaluation format version {version!r}; this aevb reads up to "
                       f"{EVALUATION_VERSION}: upgrade aevb")
    for key in ("split", "k", "elbo", "lk", "n", "dim"):
        if key not in d:
            raise RunError(f"{path} lacks the key {key!r} of an evaluation result")
    return d


def run_evaluations(run_dir: Union[str, Path]) -> List[Tuple[Path, Optional[dict], Optional[str]]]:
    """[(file, result or None, why it could not be read or None)] for every RUN/evaluation*.json."""
    out = []
    for p in sorted(Path(run_dir).glob("evaluation*.json")):
        try:
            out.append((p, read_evaluation(p), None))
        except RunError as e:
            out.append((p, None, str(e)))
    return out


def headline(d: dict) -> List[Tuple[str, float, str]]:
    """The numbers a reader shows first, as (label, value, unit): the ELBO, L_k with its standard
    error (k > 1), bits per dimension where defined, and the active units."""
    rows = [("test ELBO" if d["split"] == "test" else f"{d['split']} ELBO", d["elbo"]["mean"], "nats")]
    if d["k"] > 1:
        rows.append((f"L_{d['k']} (importance-weighted bound)", d["lk"]["mean"], "nats"))
        rows.append((f"standard error of L_{d['k']}", d["lk"]["se"], "nats"))
    bpd = d.get("bits_per_dim")
    if bpd:
        rows.append(("bits/dim (ELBO)", bpd["elbo"], "bits"))
        if d["k"] > 1:
            rows.append((f"bits/dim (L_{d['k']})", bpd["lk"], "bits"))
    if "active_units" in d:
        rows.append((f"active units (Var_x E_q[z_j] > {d.get('active_unit_threshold', ACTIVE_UNIT_THRESHOLD):g})",
                     d["active_units"], f"of {d.get('latent_dim', '?')}"))
    return rows
