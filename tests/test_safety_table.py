"""One representative bad input of each class aevb guards against, run as a user runs it, and
recorded as a table: the command, its exit status, its message line, and the SHA-256 of every
watched folder (the runs and caches involved) before and after.

For every case: no internal error (no traceback, no "internal error"), no silent wrong result
(a watched folder changes only where the case expects it to, and then as it should: a damaged
cache is rebuilt to the same rows, a resumed run reaches its epoch), and no hang (a time limit
per case). The inputs are built with the helpers of tests/helpers.py.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import pytest
import torch

from aevb.cli import main
from aevb.data.cache import physical_memory
from aevb.io import load_checkpoint
from aevb.lock import LOCK_NAME
from aevb.runs import read_marker

from conftest import train_tiny_run
from helpers import (REPO, WriteInterrupted, alive, children, live_process, read_only, snapshot, write_celeba,
                     write_images)

LIMIT_S = 60  # per case: past it, the case hangs
WATCHED = ("run", "other", "readonly", "cache", "kill-cache", "ctrlc")
_UNDO = contextlib.ExitStack()  # undone when the workspace goes: the read-only folder


def digest(folder: Path) -> str:
    """SHA-256 over the paths and contents of every file under ``folder`` ('absent' if none)."""
    if not folder.exists():
        return "absent"
    return hashlib.sha256(json.dumps(snapshot(folder), sort_keys=True).encode()).hexdigest()


def data_files(folder: Path) -> dict:
    """The cache's data and labels files by name (what a rebuild must give back unchanged)."""
    return {k: v for k, v in snapshot(folder).items() if k.endswith((".u8", ".npy"))}


@dataclass
class Case:
    """``argv``: the aevb command ({ws} is the workspace); ``needle``: what its message line says;
    ``changes``: the watched folders it may change (then ``check`` says how they must be);
    ``setup`` makes the bad input; ``killed``: run in a process that is killed with kill -9."""

    name: str
    argv: str
    code: int
    needle: str
    changes: Sequence[str] = ()
    setup: Optional[Callable] = None
    check: Optional[Callable] = None
    killed: bool = False
    row: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A finished run and a copy of it; a folder of pictures with its data cache; a larger
    folder for a conversion to kill; a CelebA folder whose partition lists a training image
    again under another name."""
    root = tmp_path_factory.mktemp("table")
    train_tiny_run(root / "run")
    shutil.copytree(root / "run", root / "other")
    shutil.copytree(root / "run", root / "readonly")
    for label in ("a", "b"):
        write_images(root / "pics" / label, 12, size=(6, 5), seed=ord(label))
    write_images(root / "big", 900, size=(120, 120), fmt="jpg")
    celeba = root / "celeba"
    write_celeba(celeba, {f"{i:06d}.jpg": p for i, p in enumerate([0, 0, 0, 1, 2, 2], 1)}, absent=0)
    os.symlink(celeba / "img_align_celeba" / "000002.jpg", celeba / "img_align_celeba" / "000099.jpg")
    with open(celeba / "list_eval_partition.txt", "a") as f:
        f.write("000099.jpg 2\n")
    from aevb.data import load_dataset
    from aevb.data.imageset import LoadOptions

    for size in (None, (4, 4)):  # the cache, and another data set's (its manifest is copied in below)
        load_dataset(f"folder:{root / 'pics'}", image_size=size,
                     options=LoadOptions(cache_dir=str(root / "cache" if size is None else root / "foreign"),
                                         progress=False))
    with _UNDO:
        yield root


def _cache_folder(ws: Path) -> Path:
    return next(p for p in (ws / "cache").iterdir() if (p / "manifest.json").is_file())


def _edit_manifest(ws: Path, change) -> None:
    path = _cache_folder(ws) / "manifest.json"
    m = json.loads(path.read_text())
    change(m)
    path.write_text(json.dumps(m))


def _corrupt(ws: Path) -> None:
    data = _cache_folder(ws) / "all.u8"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one byte
    data.write_bytes(bytes(raw))


def _foreign_manifest(ws: Path) -> None:
    other = next(p for p in (ws / "foreign").iterdir() if (p / "manifest.json").is_file())
    shutil.copy(other / "manifest.json", _cache_folder(ws) / "manifest.json")


def _rebuilt(ws: Path, case: Case) -> None:
    assert data_files(_cache_folder(ws)) == case.row["data_files"], "the rebuilt cache differs"
    assert "rebuilding it" in case.row["message"]


def _remember_data(ws: Path, case: Case) -> None:
    case.row["data_files"] = data_files(_cache_folder(ws))


def _lock_of_another_host(ws: Path, case: Case) -> None:
    """A lock file that a run on another machine wrote into a shared folder."""
    record = {"pid": 4242, "host": "gpu-node-7", "started": "2026-01-02T03:04:05", "command": "aevb train --resume other"}
    (ws / "other" / LOCK_NAME).write_text(json.dumps(record))


def _make_read_only(ws: Path, case: Case) -> None:
    _UNDO.enter_context(read_only(ws / "readonly"))


def _lock_of_a_python_process(ws: Path, case: Case) -> None:
    """A lock file (its flock free) naming a live Python process that runs no aevb."""
    holder = live_process()
    case.row["holder"] = holder
    (ws / "other" / LOCK_NAME).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname()}))


def _resumed(ws: Path, case: Case) -> None:
    holder = case.row.pop("holder")
    try:
        assert holder.poll() is None, "the process named by the lock was touched"
    finally:
        holder.kill()
        holder.wait()
    assert load_checkpoint(ws / "other" / "checkpoints" / "last.pt")["epoch"] == 2
    assert read_marker(ws / "other")["status"] == "finished" and not (ws / "other" / LOCK_NAME).exists()


def _interrupted(ws: Path, case: Case) -> None:
    info = read_marker(ws / "ctrlc")
    assert (info["status"], info["epoch"]) == ("interrupted", 1), info
    assert load_checkpoint(ws / "ctrlc" / "checkpoints" / "last.pt")["epoch"] == 1
    assert not list((ws / "ctrlc").rglob("*.tmp"))


def _nothing_complete(ws: Path, case: Case) -> None:
    workers = case.row.pop("workers")
    deadline = time.time() + 5
    while time.time() < deadline and any(alive(w) for w in workers):
        time.sleep(0.05)
    assert not [w for w in workers if alive(w)], "decoding workers outlived the killed conversion"
    assert not [p for p in (ws / "kill-cache").glob("*") if (p / "manifest.json").is_file()], "a cache looks complete"
    from aevb.data import load_dataset  # the next conversion builds it whole and removes the leftovers
    from aevb.data.imageset import LoadOptions

    ds = load_dataset(f"folder:{ws / 'big'}", image_size=(60, 60), color="rgb",
                      options=LoadOptions(cache_dir=str(ws / "kill-cache"), progress=False))
    assert ds.info["cache_reused"] is False and len(ds.train) + len(ds.test) == 900
    assert not [p for p in (ws / "kill-cache").glob("*") if ".partial-" in p.name]


T = "--no-progress --no-tensorboard --epochs 1 --threads 1"
def _memory_run(ws: Path, case: Case) -> None:
    """A run trained on a uint8 array given in memory, and two arrays of other shapes."""
    import numpy as np

    from aevb.config import RunConfig
    from aevb.data import as_dataset
    from aevb.training import Trainer

    if (ws / "memrun").exists():
        return
    x = np.random.RandomState(0).randint(0, 256, (60, 6, 5)).astype(np.uint8)
    ds = as_dataset(x)
    cfg = RunConfig()
    cfg.data.dataset = ds.info["spec"]
    cfg.model.encoder_hidden, cfg.train.epochs, cfg.train.progress = [8], 1, False
    cfg.train.tensorboard, cfg.train.report = False, False
    Trainer.new(cfg, ws / "memrun", data=ds).fit()
    np.save(ws / "x56.npy", x.reshape(60, 5, 6))
    np.save(ws / "x65.npy", x)


def _huge_codes(ws: Path, case: Case) -> None:
    import numpy as np

    np.save(ws / "huge.npy", np.full((2, 3), 1e300))


CASES = [
    Case("corrupt cache data", "data prepare folder:{ws}/pics --cache-dir {ws}/cache --workers 1", 0,
         "whose content changed since it was built", ("cache",), lambda ws, c: (_remember_data(ws, c), _corrupt(ws)),
         _rebuilt),
    Case("edited manifest", "data prepare folder:{ws}/pics --cache-dir {ws}/cache --workers 1", 0,
         "has a manifest that was changed after the cache was built", ("cache",),
         lambda ws, c: (_remember_data(ws, c), _edit_manifest(ws, lambda m: m["splits"]["all"].update(rows=5))),
         _rebuilt),
    Case("manifest from another data set", "data prepare folder:{ws}/pics --cache-dir {ws}/cache --workers 1", 0,
         "has a manifest built for other data or options", ("cache",),
         lambda ws, c: (_remember_data(ws, c), _foreign_manifest(ws)), _rebuilt),
    Case("overlapping splits (one file under two names)",
         f"train --dataset celeba --data-dir {{ws}}/celeba --out {{ws}}/new {T}", 2,
         "000002.jpg (train) and {ws}/celeba/img_align_celeba/000099.jpg (test)"),
    Case("work that cannot fit", f"train --kl mc --samples 100000 --batch-size 128 --out {{ws}}/new {T}", 2,
         "needs 54.1 GB; lower --batch-size, --samples"),
    Case("too many workers", "data prepare folder:{ws}/pics --workers 100000", 2, "--workers 100000 is out of range"),
    Case("kill -9 of a conversion and its workers", "data prepare folder:{ws}/big --cache-dir {ws}/kill-cache "
         "--image-size 60 60 --color rgb --workers 2", -signal.SIGKILL, "", ("kill-cache",), check=_nothing_complete, killed=True),
    Case("lock from another host (a shared folder)", "train --resume {ws}/other --epochs 2 --no-progress", 2,
         "wait for it to finish or stop it on gpu-node-7; if that process is no longer running, delete "
         "{ws}/other/.aevb.lock", setup=_lock_of_another_host),
    Case("read-only run folder", "train --resume {ws}/readonly --epochs 2 --no-progress", 2,
         "{ws}/readonly: cannot resume it: its lock file {ws}/readonly/.aevb.lock cannot be created (",
         setup=_make_read_only),
    Case("reused-PID lock (a live python -c named, its lock free)", "train --resume {ws}/other --epochs 2 --no-progress",
         0, "", ("other",), _lock_of_a_python_process, _resumed),
    Case("Ctrl-C during a checkpoint write", "train --out {ws}/ctrlc --hidden 16 --images-every 0 "
         "--no-progress --no-tensorboard --epochs 3", 130, "interrupted; files already written are complete",
         ("ctrlc",), check=_interrupted),
    Case("misleading message (a file as RUN)", "evaluate {ws}/run/checkpoints/last.pt", 2,
         "last.pt is a file, not a run folder; it is inside the run {ws}/run: give that folder"),
    Case("outputs into another run", "sample {ws}/run --out {ws}/other/checkpoints/grid.png", 2,
         "would write into checkpoints/grid.png of the run {ws}/other"),
    Case("run trained on data in memory, no --data", "evaluate {ws}/memrun", 2,
         "was trained on data given in memory (60 x 6 x 5 uint8); pass --data SOURCE", setup=_memory_run),
    Case("--data of another shape (a memory run)", "evaluate {ws}/memrun --data array:{ws}/x56.npy", 2,
         "but the run takes 1x6x5", setup=_memory_run),
    Case("plot of a memory run without --data", "plot {ws}/memrun reconstructions", 2, "pass --data SOURCE",
         setup=_memory_run),
    Case("--data of another shape (a run on files)", "evaluate {ws}/run --data array:{ws}/x65.npy", 2,
         "has datapoints of 1x6x5 (C x H x W) but", setup=_memory_run),
    Case("damaged memory record", "train --dataset memory:10x3:uint8:abc --out {ws}/new --no-progress", 2,
         "is not the record of data given in memory"),
    Case("memory record given to train", "train --dataset memory:10x3:uint8:" + "a" * 64 + " --out {ws}/new "
         "--no-progress", 2, "names data given in memory (10 x 3 uint8), which cannot be loaded from a config"),
    Case(".npy output with draws", "encode {ws}/run --data digits:test --out {ws}/e.npy --samples 2 --no-progress", 2,
         "a .npy file holds the posterior means only"),
    Case("codes beyond float32", "decode {ws}/run --z {ws}/huge.npy --out {ws}/decoded", 2, "beyond float32",
         setup=_huge_codes),
]


class _Hang(BaseException):
    """Raised in a case that ran past LIMIT_S (not an Exception: nothing may catch it)."""


def _run_in_process(argv: list, capsys, ctrl_c: bool) -> tuple:
    real_save, saves = torch.save, []

    def save(obj, f, *a, **k):  # the second checkpoint's write is cut short by Ctrl-C
        saves.append(1)
        return real_save(obj, WriteInterrupted(f) if len(saves) == 2 else f, *a, **k)

    def hang(*_):
        raise _Hang()

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(LIMIT_S)
    if ctrl_c:
        torch.save = save
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    finally:
        torch.save = real_save
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    out, err = capsys.readouterr()
    return code, out, err


def _run_killed(argv: list, case: Case) -> tuple:
    """``python -m aevb ARGV``, killed with kill -9 once two decoding workers run."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "aevb", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    workers, deadline = [], time.time() + LIMIT_S
    try:
        while time.time() < deadline and len(workers) < 2 and proc.poll() is None:
            workers = children(proc.pid)
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=LIMIT_S)
    assert len(workers) >= 2, f"the conversion ended before its workers were seen: {err}"
    case.row["workers"] = workers
    return proc.returncode, out, err


def test_one_bad_input_of_each_class_changes_nothing_it_should_not(ws, capsys, monkeypatch, one_thread, tmp_path):
    monkeypatch.setenv("AEVB_CACHE", str(ws / "cache"))
    # a machine of at most 16 GB, so that what it cannot hold is refused on larger ones too
    monkeypatch.setattr("aevb.data.cache.physical_memory", lambda real=physical_memory(): min(real, 16 * 10 ** 9))
    table, failures = [], []
    for case in CASES:
        if case.setup:
            case.setup(ws, case)
        before = {name: digest(ws / name) for name in WATCHED}
        argv = [a.replace("{ws}", str(ws)) for a in shlex.split(case.argv)]
        t0 = time.perf_counter()
        if case.killed:
            code, out, err = _run_killed(argv, case)
        else:
            code, out, err = _run_in_process(argv, capsys, ctrl_c=case.name.startswith("Ctrl-C"))
        seconds = time.perf_counter() - t0
        after = {name: digest(ws / name) for name in WATCHED}
        lines = [line for line in err.splitlines() if line.strip()]
        needle = case.needle.replace("{ws}", str(ws))
        message = next((line for line in lines if needle and needle in line), lines[-1] if lines else "")
        if case.killed:
            message = f"(killed by SIGKILL) {message}".strip()
        case.row.update(message=message)
        changed = sorted(name for name in WATCHED if before[name] != after[name])
        problems = []
        if "Traceback" in out + err or "internal error" in out + err:
            problems.append("internal error")
        if code != case.code:
            problems.append(f"exit status {code}, expected {case.code}")
        if needle and needle not in message:
            problems.append(f"message lacks {needle!r}")
        if code == 2 and len(lines) != 1:  # a refusal is one line
            problems.append(f"{len(lines)} message lines")
        if set(changed) - set(case.changes):
            problems.append(f"changed {sorted(set(changed) - set(case.changes))}")
        if seconds > LIMIT_S:
            problems.append("hung")
        if case.check and not problems:
            try:
                case.check(ws, case)
            except AssertionError as e:
                problems.append(f"wrong result: {e}")
        table.append((case.name, "aevb " + case.argv, code, message.replace(str(ws), "WS"),
                      {n: (before[n][:12], after[n][:12]) for n in WATCHED if n in case.changes or before[n] != after[n]},
                      f"{seconds:.1f}", "; ".join(problems) or "ok"))
        if problems:
            failures.append(f"{case.name}: {'; '.join(problems)} ({message})")
    text = ["| class | command | exit | message line | watched folders changed (sha256 before -> after) | s | verdict |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, cmd, code, message, digests, seconds, verdict in table:
        shown = ", ".join(f"{n}: {a} -> {b}" for n, (a, b) in digests.items()) or "none"
        text.append(f"| {name} | `{cmd}` | {code} | {message[:160]} | {shown} | {seconds} | {verdict} |")
    unchanged = {n: digest(ws / n)[:12] for n in WATCHED}
    text.append(f"\nwatched folders now: {unchanged}")
    (tmp_path / "safety-table.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))
    assert not failures, "\n".join(failures + text)
    assert {c.name.split(" (")[0] for c in CASES} >= {
        "corrupt cache data", "edited manifest", "manifest from another data set", "overlapping splits",
        "work that cannot fit", "too many workers", "kill -9 of a conversion and its workers", "reused-PID lock",
        "Ctrl-C during a checkpoint write", "misleading message", "outputs into another run", "lock from another host",
        "read-only run folder"}
