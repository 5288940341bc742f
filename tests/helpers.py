"""Helpers shared by several test modules (test modules import from here, never from each other)."""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ files and processes
def snapshot(root: Path) -> dict:
    """{relative path: SHA-256} of every file under ``root``."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def live_process(program=None) -> subprocess.Popen:
    """A process that stays alive (a Python process, like an aevb writer, unless ``program``)."""
    return subprocess.Popen(program or [sys.executable, "-c", "import time; time.sleep(3600)"])


_HOLD = ("import sys, time\nfrom aevb.lock import RunLock\nlock = RunLock(sys.argv[1]).acquire()\n"
         "print('held', flush=True)\ntime.sleep(3600)\n")


def lock_holder(folder: Path) -> subprocess.Popen:
    """A live process that holds ``folder``'s run lock (as a training run does) until killed."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    line = proc.stdout.readline()
    assert line.strip() == "held", line
    return proc


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` cannot be written to while inside: a read-only bind mount of itself for root
    (whom permissions do not stop), else its permissions. Skips where neither is possible."""
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(mode)
        return
    if shutil.which("mount") is None:
        pytest.skip("making a folder read-only as root needs mount")
    r = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"could not bind-mount {folder}: {r.stderr.strip()}")
    try:
        r = subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"could not make {folder} read-only: {r.stderr.strip()}")
        yield folder
    finally:
        import gc

        gc.collect()  # files still open in it (a memory-mapped checkpoint) keep the mount busy
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", str(folder)], capture_output=True)


def children(pid: int) -> list:
    """The live processes whose parent is ``pid`` (zombies are dead)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2:].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry.name))
    return out


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:].split()[0] != "Z"


class WriteInterrupted:
    """A file whose third write is cut short by Ctrl-C (as when the key is pressed mid-write)."""

    def __init__(self, f):
        self.f, self.writes = f, 0

    def write(self, data):
        self.writes += 1
        if self.writes == 3:
            raise KeyboardInterrupt
        return self.f.write(data)

    def flush(self):
        self.f.flush()


# ------------------------------------------------------------------ pictures
def write_images(folder: Path, n: int, size=(12, 10), seed=0, fmt="png", start=0):
    """``n`` random RGB pictures of ``size`` named 000000.png, ...; returns their arrays."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    arrays = []
    for i in range(n):
        a = rng.randint(0, 256, size=(size[0], size[1], 3)).astype(np.uint8)
        Image.fromarray(a).save(folder / f"{start + i:06d}.{fmt}", quality=95)
        arrays.append(a)
    return arrays


def write_celeba(root: Path, present: dict, absent: int = 3):
    """A CelebA-like folder: JPEGs of 218x178 for the rows in ``present`` ({name: split}) and a
    partition file that also names ``absent`` files that are not there."""
    from PIL import Image

    (root / "img_align_celeba").mkdir(parents=True)
    lines, rng = [], np.random.RandomState(4)
    for name, part in present.items():
        a = rng.randint(0, 256, size=(218, 178, 3)).astype(np.uint8)
        a[40:180, 20:160] = rng.randint(0, 256, size=3)  # a flat 'face' region
        Image.fromarray(a).save(root / "img_align_celeba" / name, quality=92)
        lines.append(f"{name} {part}")
    for i in range(absent):
        lines.append(f"9{i:05d}.jpg 0")
    (root / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------ the browser
CHROMIUM = Path(os.environ.get("AEVB_CHROMIUM", "/usr/bin/chromium"))
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def playwright():
    """Playwright's sync_playwright, or a skip saying what to install."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright Python package is not installed (bash .ci/browser-setup.sh)")
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"{CHROMIUM} is missing; install Debian's chromium (bash .ci/browser-setup.sh)")
    return sync_playwright


# ------------------------------------------------------------------ bounds
def assert_non_decreasing_in_k(model, x, ks=(1, 4, 32, 256)):
    """E[L_k] never decreases with k: per datapoint, L_k' - L_k (the same seeded samples, nested)
    is not negative beyond 3 standard errors of its mean, and L_256 is clearly above L_1."""
    from aevb.bounds import evaluate_bounds

    lk = [evaluate_bounds(model, x, k=k, seed=1).lk for k in ks]
    for a, b in zip(lk, lk[1:]):
        d = b - a
        assert float(d.mean()) > -3 * float(d.std() / math.sqrt(len(d))), [float(v.mean()) for v in lk]
    assert float((lk[-1] - lk[0]).mean()) > 0.05


# ------------------------------------------------------------------ the documentation's pages
def fenced_blocks(text: str):
    """(language, [lines]) of every fenced code block."""
    blocks, lang, lines = [], None, []
    for line in text.splitlines():
        m = re.match(r"^\s*```\s*([\w+-]*)", line)
        if m and lang is None:
            lang, lines = m.group(1).lower(), []
        elif line.strip().startswith("```") and lang is not None:
            blocks.append((lang, lines))
            lang = None
        elif lang is not None:
            lines.append(line)
    return blocks


def prose(text: str) -> str:
    """The text outside fenced code blocks."""
    return re.sub(r"^\s*```.*?^\s*```[^\n]*$", "", text, flags=re.S | re.M)


def joined(lines):
    """Lines with backslash continuations joined."""
    out, cur = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
        else:
            out.append(cur + line)
            cur = ""
    if cur:
        out.append(cur)
    return out


# `aevb ...` after a prompt, variables, time or nohup, or a label such as `RUN1:`
AEVB_LINE = re.compile(r"^(?:\$\s+)?(?:[A-Z_][A-Z0-9_]*=\S*\s+)*(?:(?:time|nohup)\s+)*(?:[A-Z][A-Z0-9_]*:\s+)?"
                       r"aevb\s(.*)$")


def aevb_argv(line: str):
    """The argv of each `aevb ...` command in a shell line (also `... && aevb ...`, `aevb ... | tee`,
    `$ aevb ...`, `OMP_NUM_THREADS=1 aevb ...`, `# RUN1: aevb ...` once the comment sign is
    stripped, and `torchrun ... -m aevb ...`), without comments."""
    out = []
    for part in re.split(r"&&|;|\s\|\s", line):
        part = part.strip()
        m = AEVB_LINE.match(part) or re.search(r"(?:^|\s)-m aevb\s(.*)$", part)
        if m:
            out.append(shlex.split(m.group(1), comments=True))
    return out
