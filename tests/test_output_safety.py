"""Outputs of the new-data commands (encode, score, reconstruct --data, decode) and what the
Python methods take, as a table: each row is a command (or a call), its exit status (or the
error it raises), its message line, and the SHA-256 of every watched file before and after.

Outputs have one writer (a second is refused before its work), links and '.' are followed
before the work, what a writer killed with kill -9 left beside an output is removed by the next
writer with a note, item ids become safe file names, a full disk is one line, and CSV cells a
spreadsheet would run are escaped. The Python methods refuse what the commands refuse."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from aevb.cli import main
from aevb.errors import ConfigError, DataError, LockedError

from conftest import train_tiny_run
from helpers import REPO, alive, live_process, snapshot

ROWS = []  # the table, printed at the end of the module


def digest(folder: Path) -> str:
    """SHA-256 over the paths and contents of every file under ``folder`` (hidden ones included)."""
    if not folder.exists():
        return "absent"
    return hashlib.sha256(json.dumps(snapshot(folder), sort_keys=True).encode()).hexdigest()[:16]


def _grey_png(path: Path, value: int = 90) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, np.uint8), "L").save(path, format="PNG")


@pytest.fixture(scope="module")
def ws(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("outputs")
    train_tiny_run(root / "run")  # digits, 3 latent dimensions
    shutil.copytree(root / "run", root / "static")  # a copy that prepares data another way
    cfg = json.loads((root / "static" / "config.json").read_text())
    cfg["data"]["binarize"] = "static"
    (root / "static" / "config.json").write_text(json.dumps(cfg))
    _grey_png(root / "sheet" / "=HYPERLINK(1).png")
    _grey_png(root / "sheet" / "plain.png", 30)
    np.save(root / "rows.npy", np.random.default_rng(0).random((6000, 64)).astype(np.float32))
    (root / "notzip.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    yield root
    if ROWS:
        print("\n" + "\n".join(" | ".join(str(c) for c in r) for r in
                               [("case", "command", "status", "message", "sha256 before", "sha256 after")] + ROWS))


def _codes_csv(path: Path, ids) -> Path:
    lines = ["id,mu_0,mu_1,mu_2"] + ['"' + i.replace('"', '""') + '",0.1,-0.2,0.3' for i in ids]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _run(ws: Path, case: str, argv: str, capsys, watched: Path, **fmt):
    """Run ``aevb ARGV`` in this process; record and return (status, stderr lines, stdout)."""
    args = [a.format(ws=ws, **fmt) for a in argv.split()]
    before = digest(watched)
    try:
        code = main(args)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in out + err and "internal error" not in err, err
    ROWS.append((case, "aevb " + argv.format(ws="WS", **fmt), code, lines[-1] if lines else out.strip()[-80:],
                 before, digest(watched)))
    return code, lines, out


def _hidden(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------ refused in one line, nothing written
@pytest.mark.parametrize("case,argv,code,needle", [
    ("--z not a zip", "decode {ws}/run --z {ws}/notzip.npz --out {ws}/dec", 2, "is not a .npz file"),
    ("--z not a .npy", "decode {ws}/run --z {ws}/run/config.json --out {ws}/dec", 2, "use a .npz, .npy or .csv"),
    ("explore --seed -1", "explore {ws}/run --seed -1 --out {ws}/x.html", 2, "--seed must be in 0..4294967295; got -1",
     ),
    ("explore --seed 2**70", "explore {ws}/run --seed 1180591620717411303424 --out {ws}/x.html", 2,
     "--seed must be in 0..4294967295"),
    ("a PNG that is a folder of another", "decode {ws}/run --z {ws}/clash.csv --out {ws}/dec", 2,
     "which the item 'a.png/b.jpg' needs as a folder"),
    ("two ids, one name", "decode {ws}/run --z {ws}/twins.csv --out {ws}/dec", 2, "two items would be written to a.png",
     ),
])
def test_refused_in_one_line_before_any_work(ws, case, argv, code, needle, capsys):
    _codes_csv(ws / "clash.csv", ["a.jpg", "a.png/b.jpg"])
    _codes_csv(ws / "twins.csv", ["a.jpg", "a.png"])
    got, lines, _ = _run(ws, case, argv, capsys, ws)
    assert got == code and len(lines) == 1 and needle in lines[0], lines
    assert ROWS[-1][4] == ROWS[-1][5], "files changed"
    assert not (ws / "dec").exists() and not (ws / "x.html").exists()


# ------------------------------------------------------------------ outputs written where they point
def test_a_link_to_an_empty_folder_and_dot_are_written_through(ws, capsys, monkeypatch):
    target = ws / "target"
    target.mkdir()
    (ws / "link").symlink_to(target)
    code, lines, _ = _run(ws, "--out a link to an empty folder", "reconstruct {ws}/run --data digits:test --out "
                          "{ws}/link --no-progress", capsys, target)
    assert code == 0 and (ws / "link").is_symlink(), lines
    assert len(list(target.glob("*.png"))) == 359
    assert not [n for n in _hidden(ws) if "aevb-" in n], _hidden(ws)
    here = ws / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    code, lines, _ = _run(ws, "--out .", "reconstruct {ws}/run --data digits:test --out . --no-progress", capsys, here)
    assert code == 0, lines
    assert len(list(here.glob("*.png"))) == 359 and Path.cwd().samefile(here)  # the folder itself is kept
    assert not [n for n in _hidden(ws) if "aevb-" in n]


def test_ids_become_safe_file_names(ws, capsys):
    long = "x" * 300
    _codes_csv(ws / "odd.csv", ["nul\x00byte", long, "../../escape", "tab\there"])
    out = ws / "odd"
    code, lines, _ = _run(ws, "ids with NUL, 300 characters, ..", f"decode {{ws}}/run --z {{ws}}/odd.csv --out "
                          "{ws}/odd", capsys, out)
    assert code == 0, lines
    names = sorted(p.name for p in out.iterdir())
    assert "nul%00byte.png" in names and "escape.png" in names and "tab%09here.png" in names, names
    assert all(len(n.encode()) <= 255 for n in names) and any(n.startswith("x" * 200) for n in names)


def test_csv_cells_a_spreadsheet_would_run_are_escaped_and_read_back(ws, capsys):
    code, lines, _ = _run(ws, "an id that is a formula", "encode {ws}/run --data folder:{ws}/sheet --out {ws}/s.csv "
                          "--no-progress", capsys, ws / "sheet")
    assert code == 0, lines
    text = (ws / "s.csv").read_text()
    assert "\n'=HYPERLINK(1).png," in text and "\n=HYPERLINK" not in text, text
    assert "\nplain.png," in text
    from aevb.newdata import read_codes

    ids, _ = read_codes(ws / "s.csv", 3)
    assert ids == ["=HYPERLINK(1).png", "plain.png"]
    code, lines, _ = _run(ws, "decode the escaped CSV", "decode {ws}/run --z {ws}/s.csv --out {ws}/sheet-dec", capsys,
                          ws / "sheet-dec")
    assert code == 0 and sorted(p.name for p in (ws / "sheet-dec").iterdir()) == ["=HYPERLINK(1).png", "plain.png"]


# ------------------------------------------------------------------ leftovers of killed writers
def test_leftovers_of_a_dead_writer_are_removed_with_a_note_and_a_live_write_is_kept(ws, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    assert not alive(pid)
    partial = ws / f".left.aevb-partial-{pid}"
    _grey_png(partial / "0.png")
    stale = ws / ".left.csv.abcd1234.tmp"
    stale.write_text("half a table")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, time
        from aevb.io import atomic_path
        with atomic_path(sys.argv[1]) as tmp:
            tmp.write_text("a live write")
            print(tmp, flush=True)
            time.sleep(3600)
        """), str(ws / "left.csv")], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    try:
        live = Path(holder.stdout.readline().strip())
        assert live.exists()
        code, lines, _ = _run(ws, "a dead writer's .tmp, a live one's", "encode {ws}/run --data digits:test --out "
                              "{ws}/left.csv --no-progress", capsys, ws / "left.csv")
        assert code == 0, lines
        assert any("removed what a killed writer" in line and stale.name in line for line in lines), lines
        assert not stale.exists() and live.exists()  # the live write is not touched
        code, lines, _ = _run(ws, "a dead writer's PNG folder", "reconstruct {ws}/run --data digits:test --out "
                              "{ws}/left --no-progress", capsys, ws / "left")
        assert code == 0 and any(partial.name in line and "(1 file)" in line for line in lines), lines
        assert not partial.exists()
    finally:
        holder.kill()
        holder.wait()


WRITER = ("import sys\nfrom aevb.cli import main\nsys.exit(main(['reconstruct', sys.argv[1], '--data', "
          "'array:' + sys.argv[2], '--out', sys.argv[3], '--no-progress', '--device', 'cpu']))\n")


def _writer(ws: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, str(ws / "run"), str(ws / "rows.npy"), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})


def _partial_while_writing(ws: Path, out: Path, proc: subprocess.Popen) -> Path:
    partial = ws / f".{out.name}.aevb-partial-{proc.pid}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if partial.is_dir() and sum(1 for _ in partial.iterdir()) >= 20:
            return partial
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    pytest.fail("the writer wrote nothing within a minute")


def test_kill_9_mid_write_then_the_next_command_cleans_up(ws, capsys):
    out = ws / "killed"
    proc = _writer(ws, out)
    try:
        partial = _partial_while_writing(ws, out, proc)
    finally:
        proc.kill()  # kill -9
        proc.wait()
    assert partial.is_dir() and (ws / ".killed.aevb-lock").exists()  # what kill -9 leaves
    code, lines, _ = _run(ws, "after kill -9 of a writer", "reconstruct {ws}/run --data digits:test --out {ws}/killed "
                          "--no-progress", capsys, out)
    assert code == 0, lines
    assert any("removed what a killed writer" in line and partial.name in line for line in lines), lines
    assert not [n for n in _hidden(ws) if n.startswith(".killed.")], _hidden(ws)
    assert len(list(out.glob("*.png"))) == 359


def test_a_second_writer_of_one_output_is_refused_before_its_work(ws, capsys):
    out = ws / "twice"
    first = _writer(ws, out)
    try:
        _partial_while_writing(ws, out, first)
        code, lines, _ = _run(ws, "a second writer", "reconstruct {ws}/run --data digits:test --out {ws}/twice "
                              "--no-progress", capsys, ws / ".twice.aevb-partial-0")
        assert code == 2 and len(lines) == 1, lines
        assert f"is being written by process {first.pid}" in lines[0] and "cannot write it now" in lines[0], lines
        assert not list(ws.glob(f".twice.aevb-partial-{os.getpid()}"))
        _, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert len(list(out.glob("*.png"))) == 6000
    assert not [n for n in _hidden(ws) if n.startswith(".twice.")], _hidden(ws)


# ------------------------------------------------------------------ a full disk
def test_a_full_disk_is_one_line_for_every_format(ws, capsys, tmp_path):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a full disk needs a small tmpfs, which only root can mount")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("could not mount a tmpfs")
    try:
        with open(disk / "filler", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        # room for the output's lock file (a page) but not for the output
        os.truncate(disk / "filler", (disk / "filler").stat().st_size - 8192)
        for name in ("s.npy", "s.csv", "s.npz"):
            code, lines, _ = _run(ws, f"full disk, {name}", f"score {{ws}}/run --data digits:test --k 2 --out "
                                  f"{disk}/{name} --no-progress", capsys, disk)
            assert code == 2 and f"disk full: could not write {disk}/{name}" in lines[-1], lines
        code, lines, _ = _run(ws, "full disk, PNGs", f"reconstruct {{ws}}/run --data digits:test --out {disk}/rec "
                              "--no-progress", capsys, disk)
        assert code == 2 and f"disk full: could not write {disk}/rec/" in lines[-1], lines
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


# ------------------------------------------------------------------ the Python methods
def _call(case: str, call: str, f, watched: Path):
    before = digest(watched)
    try:
        f()
        got = None
    except Exception as e:  # what the method raises is the row's result
        got = e
    ROWS.append((case, call, type(got).__name__ if got else "ok", str(got).splitlines()[0] if got else "",
                 before, digest(watched)))
    return got


def test_the_python_methods_refuse_what_the_commands_refuse(ws):
    from PIL import Image

    from aevb import load_run

    run, static = load_run(ws / "run"), load_run(ws / "static")
    codes = run.encode("digits:test")
    from aevb.newdata import write_table

    write_table(ws / "codes.npz", codes)
    cases = [
        ("foreign items", "run.encode(static.preprocess(x))", lambda: run.encode(static.preprocess("digits:test")),
         DataError, "whose data settings differ"),
        ("negative count", "run.encode(x, samples=-1)", lambda: run.encode("digits:test", samples=-1), ConfigError,
         "samples must be in 0..10000; got -1"),
        ("fractional k", "run.score(x, k=2.5)", lambda: run.score("digits:test", k=2.5), ConfigError,
         "k must be a whole number"),
        ("negative seed", "run.reconstruct(x, seed=-1)", lambda: run.reconstruct("digits:test", seed=-1), ConfigError,
         "seed must be in 0..4294967295"),
        ("empty image", "run.encode(PIL 0x0)", lambda: run.encode(Image.new("L", (0, 0))), DataError,
         "an image without pixels"),
        ("codes that overflow", "run.decode(1e300)", lambda: run.decode(np.full((2, 3), 1e300)), DataError,
         "beyond float32"),
        ("not codes", "run.decode('notzip.npz')", lambda: run.decode(str(ws / "notzip.npz")), DataError,
         "is not a .npz file"),
    ]
    for case, call, f, kind, needle in cases:
        got = _call(case, call, f, ws / "run")
        assert isinstance(got, kind) and needle in str(got), (case, got)
        assert len(str(got).splitlines()) == 1
        assert ROWS[-1][4] == ROWS[-1][5]
    same = run.decode(str(ws / "codes.npz"))  # the file aevb encode writes is read, its mu decoded
    assert np.allclose(same.numpy(), run.decode(codes).numpy())


def test_a_refusal_never_says_to_kill_a_process_that_is_not_aevb(tmp_path):
    """A lock held by a process whose record names a live process of another program with its
    real start time: the refusal names no kill command."""
    from aevb.lock import RunLock, process_start

    sleeper = live_process(["sleep", "3600"])
    record = {"pid": sleeper.pid, "host": socket.gethostname(), "start_ticks": process_start(sleeper.pid)}
    hold = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\nfd = os.open(sys.argv[1], "
                             "os.O_RDWR | os.O_CREAT)\nfcntl.flock(fd, fcntl.LOCK_EX)\nos.write(fd, sys.argv[2]."
                             "encode())\nprint('held', flush=True)\ntime.sleep(3600)\n",
                             str(tmp_path / ".out.aevb-lock"), json.dumps(record)], stdout=subprocess.PIPE, text=True)
    try:
        assert hold.stdout.readline().strip() == "held"
        with pytest.raises(LockedError) as got:
            RunLock(tmp_path / "out", tmp_path / ".out.aevb-lock").acquire()
        assert f"process {sleeper.pid}" in str(got.value) and "kill" not in str(got.value), got.value
    finally:
        for p in (hold, sleeper):
            p.kill()
            p.wait()
