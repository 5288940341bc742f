"""Data at scale: compact storage, the on-disk cache, streaming, CelebA.

Every test generates its own small data; the real CelebA subset is used when present."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aevb.config import RunConfig
from aevb.data import DataError, Split, load_dataset
from aevb.data import cache as cache_mod
from aevb.data.celeba import celeba_plan, read_partition
from aevb.data.imageset import LoadOptions
from aevb.training import Trainer

from helpers import write_celeba, write_images
from aevb import metrics as M

REPO = Path(__file__).resolve().parents[1]
CELEBA = REPO.parent / "shared" / "datasets" / "celeba"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AEVB_CACHE", str(tmp_path / "cache"))



def tiny_config(dataset: str, budget=None, epochs=2) -> RunConfig:
    cfg = RunConfig()
    cfg.data.dataset, cfg.data.memory_budget = dataset, budget
    cfg.model.latent_dim, cfg.model.encoder_hidden = 3, [16]
    cfg.train.epochs, cfg.train.batch_size, cfg.train.eval_batch_size = epochs, 16, 32
    cfg.train.progress, cfg.train.tensorboard, cfg.train.images_every = False, False, 0
    return cfg


# ----------------------------------------------------------------------------- the Split
def test_streamed_split_hands_out_the_same_rows_as_in_memory(tmp_path):
    rng = np.random.RandomState(1)
    x = rng.randint(0, 256, size=(50, 7)).astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    streamed, memory = Split(mm, scale=255.0), Split(torch.from_numpy(x), scale=255.0)
    assert streamed.streamed and not memory.streamed and memory.storage_dtype == "uint8"
    idx = [31, 2, 2, 49, 0, 17]  # unsorted, with a repeat
    expected = torch.from_numpy(x[idx].astype(np.float32)) / 255
    assert torch.equal(streamed.take(idx), expected) and torch.equal(memory.take(idx), expected)
    batches = [torch.randperm(50)[:9] for _ in range(4)]
    for a, b in zip(streamed.batches(batches), memory.batches(batches, prefetch=False)):
        assert torch.equal(a, b)
    assert torch.equal(torch.cat(list(streamed.batches(8))), memory.materialize())
    held = streamed.subset([5, 40, 3])  # a view of the same file, not a copy
    assert held.streamed and torch.equal(held.rows(0, 3), expected.new_tensor(x[[5, 40, 3]] / 255.0))
    assert streamed.value_range() == (x.min() / 255, x.max() / 255)


def test_compact_storage_of_the_builtin_data():
    ds = load_dataset("digits")
    assert ds.train.storage_dtype == "uint8" and ds.train.nbytes == len(ds.train) * 64
    assert float(ds.train.materialize().max()) == 1.0  # 16/16: values are levels k/16


# ----------------------------------------------------------------------------- streaming = in memory
@pytest.mark.parametrize("source", ["array", "folder"])
def test_streamed_training_equals_in_memory_training(tmp_path, source):
    if source == "array":
        x = np.random.RandomState(2).randint(0, 256, size=(120, 1, 6, 5)).astype(np.uint8)
        np.save(tmp_path / "d.npy", x)
        spec = f"array:{tmp_path / 'd.npy'}"
    else:
        write_images(tmp_path / "imgs", 90, size=(6, 5))
        spec = f"folder:{tmp_path / 'imgs'}"
    histories = {}
    for budget in (None, "1KB"):
        tr = Trainer.new(tiny_config(spec, budget), tmp_path / f"run-{budget}")
        assert tr.data.train.streamed == (budget is not None)
        histories[budget] = tr.fit()
    strip = lambda h: [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in h]
    assert strip(histories[None]) == strip(histories["1KB"])  # value for value


def test_resumed_streamed_run_equals_an_uninterrupted_one(tmp_path):
    x = np.random.RandomState(3).randint(0, 256, size=(100, 30)).astype(np.uint8)
    np.save(tmp_path / "d.npy", x)
    spec = f"array:{tmp_path / 'd.npy'}"
    def cfg(epochs):  # a learning-rate warm-up over 10 steps spans the 7-step epochs
        c = tiny_config(spec, "1KB", epochs=epochs)
        c.optim.warmup_steps = 10
        return c

    whole = Trainer.new(cfg(3), tmp_path / "whole")
    whole.fit()
    first = Trainer.new(cfg(1), tmp_path / "parts")
    first.fit()
    over = cfg(3)
    rest = Trainer.resume(tmp_path / "parts", overrides=over, given=["train.epochs"])
    assert rest.data.train.streamed
    rest.fit()
    assert whole.history[-1][M.TEST_BOUND] == rest.history[-1][M.TEST_BOUND]
    for (n, a), b in zip(whole.model.state_dict().items(), rest.model.state_dict().values()):
        assert torch.equal(a, b), n


# ----------------------------------------------------------------------------- the cache
def test_cache_is_reused_when_nothing_changed_and_rebuilt_when_a_source_did(tmp_path, capfd):
    write_images(tmp_path / "imgs", 12)
    spec = f"folder:{tmp_path / 'imgs'}"
    first = load_dataset(spec)
    assert first.info["cache_reused"] is False and Path(first.info["cache"]).is_dir()
    again = load_dataset(spec)
    assert again.info["cache_reused"] is True and again.info["cache"] == first.info["cache"]
    # a file changes: detected, said, rebuilt, and the new pixels are served
    new = np.full((12, 10, 3), 7, np.uint8)
    Image.fromarray(new).save(tmp_path / "imgs" / "000000.png")
    capfd.readouterr()
    changed = load_dataset(spec)
    assert changed.info["cache_reused"] is False and "changed since its cache was built" in capfd.readouterr().err
    rows = torch.cat([changed.train.materialize(), changed.test.materialize()]) * 255
    assert any(torch.all(r == 7) for r in rows)
    # other options: another cache, the first one untouched
    other = load_dataset(spec, image_size=(6, 5))
    assert other.info["cache"] != changed.info["cache"] and other.image_shape == (3, 6, 5)
    assert load_dataset(spec).info["cache_reused"] is True


def test_cache_from_another_version_is_rebuilt(tmp_path, capfd):
    write_images(tmp_path / "imgs", 5)
    ds = load_dataset(f"folder:{tmp_path / 'imgs'}")
    m = Path(ds.info["cache"]) / "manifest.json"
    manifest = json.loads(m.read_text())
    manifest["version"] = 999
    m.write_text(json.dumps(manifest))
    capfd.readouterr()
    assert load_dataset(f"folder:{tmp_path / 'imgs'}").info["cache_reused"] is False
    assert "another version" in capfd.readouterr().err


def test_a_damaged_edited_or_foreign_cache_is_rebuilt_and_never_used(tmp_path, capfd, monkeypatch):
    for label in ("a", "b"):  # sub-folders: the cache holds labels too
        write_images(tmp_path / "imgs" / label, 15, seed=ord(label))
    spec = f"folder:{tmp_path / 'imgs'}"
    first = load_dataset(spec, image_size=(6, 5))
    folder = Path(first.info["cache"])
    rows = lambda ds: torch.cat([ds.train.materialize(), ds.test.materialize()])
    want, want_labels = rows(first), torch.cat([first.train.y, first.test.y])
    # the same files and image size with a crop: another cache whose rows have the same length
    other = Path(load_dataset(spec, image_size=(6, 5), crop=(10, 8)).info["cache"]) / "manifest.json"
    opened = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda f, *a, **k: (opened.append(Path(f).resolve()), real_load(f, *a, **k))[1])

    def manifest():
        return json.loads((folder / "manifest.json").read_text())

    def edit(change, reseal=True):
        m = manifest()
        change(m, next(iter(m["splits"])))
        if reseal:  # as if the seal were recomputed too: the schema checks must still refuse it
            m["seal"] = cache_mod.seal(m)
        (folder / "manifest.json").write_text(json.dumps(m))

    def invert(m, split):
        data = folder / m["splits"][split]["file"]
        data.write_bytes(bytes(255 - b for b in data.read_bytes()))

    def reshape(m, split):
        m["splits"][split]["rows"] *= 2
        m["splits"][split]["dim"] //= 2

    damages = [
        ("every byte of the data inverted", lambda: invert(manifest(), next(iter(manifest()["splits"]))),
         "whose content changed since it was built"),
        ("rows reshaped", lambda: edit(reshape, reseal=False), "changed after the cache was built"),
        ("rows reshaped, resealed", lambda: edit(reshape), "rows of 45 values (images of 3x6x5 = 90 values)"),
        ("another data set's manifest", lambda: (folder / "manifest.json").write_text(other.read_text()),
         "built for other data or options"),
        ("a split removed", lambda: edit(lambda m, s: m["splits"].pop(s)), "lists the splits []"),
        ("rows not a number", lambda: edit(lambda m, s: m["splits"][s].update(rows="many")), "'many' rows"),
        ("labels outside the cache", lambda: edit(lambda m, s: m["splits"][s].update(labels="../../etc/passwd")),
         "names the files"),
        ("labels replaced", lambda: np.save(folder / manifest()["splits"]["all"]["labels"], np.zeros(30, np.int64)),
         "labels file all.labels.npy whose content changed"),
        ("manifest unreadable", lambda: (folder / "manifest.json").write_text("{"), "manifest cannot be read"),
        ("a split's keys removed", lambda: edit(lambda m, s: m["splits"].update({s: {"file": f"{s}.u8"}})),
         "gives the all split None rows"),
        ("a file over the whole-file bound, inverted",
         lambda: (monkeypatch.setattr(cache_mod, "FULL_CHECK_BYTES", 0), invert(manifest(), "all")),
         "(sampled checksum)"),
    ]
    for what, damage, needle in damages:
        damage()
        capfd.readouterr()
        ds = load_dataset(spec, image_size=(6, 5))
        err = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and needle in err[0] and "rebuilding it" in err[0], (what, err)
        assert ds.info["cache_reused"] is False and Path(ds.info["cache"]) == folder, what
        assert torch.equal(rows(ds), want) and torch.equal(torch.cat([ds.train.y, ds.test.y]), want_labels)
        assert all(p.parent == folder.resolve() for p in opened), (what, opened)
        assert load_dataset(spec, image_size=(6, 5)).info["cache_reused"] is True, what  # sound again


# A conversion killed with kill -9 just before its manifest is written: every data file is there,
# nothing says it is complete. (How fast its decoding workers die, and memory against the data
# set's size, are measured by benchmarks/bench_data_robustness.py, not here.)
KILLED_AT_COMMIT = textwrap.dedent("""
    import os, signal, sys
    from aevb.data import cache, load_dataset
    from aevb.data.imageset import LoadOptions
    cache.CacheBuild.commit = lambda self, *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    load_dataset(sys.argv[1], options=LoadOptions(cache_dir=sys.argv[2], progress=False, workers=1))
""")


def test_an_interrupted_conversion_is_not_taken_for_a_finished_one(tmp_path):
    write_images(tmp_path / "imgs", 30, size=(12, 10))
    cache = tmp_path / "cache"
    spec = f"folder:{tmp_path / 'imgs'}"
    out = subprocess.run([sys.executable, "-c", KILLED_AT_COMMIT, spec, str(cache)], capture_output=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == -signal.SIGKILL, out.stderr[-2000:]
    partial = [p for p in cache.glob("*") if ".partial-" in p.name]
    assert len(partial) == 1 and sum(f.stat().st_size for f in partial[0].iterdir()) >= 30 * 12 * 10  # the pixels
    assert not [p for p in cache.glob("*") if (p / "manifest.json").is_file()]  # nothing looks complete
    ds = load_dataset(spec, options=LoadOptions(cache_dir=str(cache)))
    assert ds.info["cache_reused"] is False and len(ds.train) + len(ds.test) == 30
    assert not [p for p in cache.glob("*") if ".partial-" in p.name]  # the leftovers are gone


def _parent_death_signal() -> int:
    """PR_GET_PDEATHSIG of this process: the signal it gets when its parent dies (0: none)."""
    import ctypes

    sig = ctypes.c_int(0)
    ctypes.CDLL(None, use_errno=True).prctl(2, ctypes.byref(sig), 0, 0, 0)  # PR_GET_PDEATHSIG
    return sig.value


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_decoding_workers_are_killed_with_their_parent():
    """A conversion killed with kill -9 takes its workers with it: the kernel sends each SIGKILL
    when the process that started it dies (and a worker whose parent is already gone ends)."""
    from aevb.data.decode import _pool

    with _pool(2, 2) as pool:
        assert [f.result() for f in [pool.submit(_parent_death_signal) for _ in range(2)]] == [signal.SIGKILL] * 2
    assert _parent_death_signal() == 0  # this process itself was not changed


def test_worker_counts_are_bounded_by_the_cores():
    from aevb.data.decode import MAX_WORKERS_PER_CORE, check_workers, decode_all, default_workers

    most = default_workers() * MAX_WORKERS_PER_CORE
    assert check_workers(most) == most and check_workers(0) == 0
    for bad in (most + 1, 100000, -1):
        with pytest.raises(DataError, match=f"to {most} "):
            decode_all([], None, workers=bad)


def test_disk_full_during_conversion_is_said_and_leaves_no_cache(tmp_path):
    write_images(tmp_path / "imgs", 40, size=(64, 64))
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)],
                             capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("cannot mount a small tmpfs here (needs root and mount rights)")
    try:
        with pytest.raises(DataError, match="disk space|disk filled up") as e:
            load_dataset(f"folder:{tmp_path / 'imgs'}", options=LoadOptions(cache_dir=str(small / "c")))
        assert "--cache-dir" in str(e.value)
        assert not any((p / "manifest.json").is_file() for p in (small / "c").glob("*"))
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)


# ----------------------------------------------------------------------------- CelebA
def test_celeba_loader_follows_the_partition_and_crops(tmp_path, capfd):
    present = {f"{i:06d}.jpg": p for i, p in enumerate([0, 0, 0, 0, 1, 2, 2], 1)}
    write_celeba(tmp_path / "celeba", present)
    ds = load_dataset("celeba", tmp_path / "celeba")
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (4, 1, 2)
    assert ds.image_shape == (3, 218, 178) and ds.kind == "unit" and ds.levels == 256
    assert "3 of the 10 images" in capfd.readouterr().err
    # full size: exactly the decoded JPEG, channels first
    ref = np.asarray(Image.open(tmp_path / "celeba" / "img_align_celeba" / "000006.jpg").convert("RGB"))
    assert torch.equal(ds.test.rows(0, 1)[0] * 255, torch.from_numpy(np.moveaxis(ref, 2, 0).reshape(-1).astype(np.float32)))
    # the 64x64 convention: centre 148x148, resized; reduced-size JPEG decoding stays close
    small = load_dataset("celeba", tmp_path / "celeba", crop=(148, 148), image_size=(64, 64))
    img = Image.open(tmp_path / "celeba" / "img_align_celeba" / "000006.jpg").convert("RGB")
    exact = np.asarray(img.crop((15, 35, 163, 183)).resize((64, 64), Image.Resampling.LANCZOS)).astype(np.float32)
    got = (small.test.rows(0, 1)[0] * 255).reshape(3, 64, 64).permute(1, 2, 0).numpy()
    assert small.image_shape == (3, 64, 64) and np.abs(got - exact).mean() < 6
    exact_opts = LoadOptions(draft=False)
    full = load_dataset("celeba", tmp_path / "celeba", crop=(148, 148), image_size=(64, 64), options=exact_opts)
    got = (full.test.rows(0, 1)[0] * 255).reshape(3, 64, 64).permute(1, 2, 0).numpy()
    assert np.array_equal(got, exact)


def test_a_partition_listing_training_images_as_test_images_is_refused(tmp_path, capsys):
    present = {f"{i:06d}.jpg": p for i, p in enumerate([0] * 60 + [1, 2, 2], 1)}
    write_celeba(tmp_path / "celeba", present, absent=0)
    part = tmp_path / "celeba" / "list_eval_partition.txt"
    lines = part.read_text().splitlines()
    part.write_text("\n".join(lines + [f"{i:06d}.jpg 2" for i in range(1, 51)]) + "\n")  # 50 again, as test
    with pytest.raises(DataError) as e:
        load_dataset("celeba", tmp_path / "celeba")
    msg = str(e.value)
    assert "lists 50 image(s) more than once" in msg and "000001.jpg (train and test)" in msg and "45 more" in msg
    cache = tmp_path / "cache"
    env = {**os.environ, "AEVB_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "aevb", "train", "--dataset", "celeba", "--data-dir",
                        str(tmp_path / "celeba"), "--out", str(tmp_path / "run"), "--epochs", "1"],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "more than once" in r.stderr, r.stderr
    assert not (tmp_path / "run").exists() and not cache.exists()
    part.write_text("\n".join(lines) + "\n")  # the official partition: accepted
    assert len(load_dataset("celeba", tmp_path / "celeba").train) == 60


def test_celeba_bad_inputs_say_what_to_do(tmp_path):
    with pytest.raises(DataError, match="list_eval_partition.txt.*mmlab"):
        load_dataset("celeba", tmp_path / "nothing")
    write_celeba(tmp_path / "c", {"000001.jpg": 0, "000002.jpg": 2})
    with pytest.raises(DataError, match="the crop 300x300 is larger than the images \\(218x178"):
        load_dataset("celeba", tmp_path / "c", crop=(300, 300))
    (tmp_path / "c" / "list_eval_partition.txt").write_text("hello world\n")
    with pytest.raises(DataError, match="line 1.*not CelebA"):
        load_dataset("celeba", tmp_path / "c")
    (tmp_path / "c" / "list_eval_partition.txt").write_text("123456.jpg 0\n")
    with pytest.raises(DataError, match="none of the 1 images"):
        load_dataset("celeba", tmp_path / "c")


def test_unreadable_images_are_listed_or_skipped(tmp_path, capfd):
    write_images(tmp_path / "imgs", 6, fmt="jpg")
    good = (tmp_path / "imgs" / "000001.jpg").read_bytes()
    (tmp_path / "imgs" / "000002.jpg").write_bytes(good[: len(good) // 3])  # truncated
    (tmp_path / "imgs" / "000003.jpg").write_bytes(b"not a picture")
    with pytest.raises(DataError, match="2 image file.*could not be read.*--skip-bad-images"):
        load_dataset(f"folder:{tmp_path / 'imgs'}", image_size=(12, 10), color="rgb")
    capfd.readouterr()
    ds = load_dataset(f"folder:{tmp_path / 'imgs'}", image_size=(12, 10), color="rgb",
                      options=LoadOptions(skip_bad_images=True))
    assert len(ds.train) + len(ds.test) == 4 and "skipped 2 unreadable" in capfd.readouterr().err


def test_npy_that_cannot_be_used_is_refused(tmp_path):
    np.save(tmp_path / "ok.npy", np.zeros((10, 4), np.uint8))
    data = (tmp_path / "ok.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:-8])
    with pytest.raises(DataError, match="could not read it"):
        load_dataset(f"array:{tmp_path / 'cut.npy'}")
    np.save(tmp_path / "s.npy", np.array(["a", "b"] * 5).reshape(10, 1))
    with pytest.raises(DataError, match="dtype"):
        load_dataset(f"array:{tmp_path / 's.npy'}")
    np.save(tmp_path / "big.npy", np.zeros((100, 2, 2, 3), np.uint8))  # channels last, over budget
    with pytest.raises(DataError, match="memory budget"):
        load_dataset(f"array:{tmp_path / 'big.npy'}", options=LoadOptions(memory_budget=100))


def test_sizes_parse_and_bad_budget_is_refused():
    assert cache_mod.parse_size("500MB") == 500_000_000 and cache_mod.parse_size("1.5GiB") == 3 * 2 ** 29
    assert cache_mod.parse_size("800M") == 800 * 2 ** 20 and cache_mod.parse_size(4096) == 4096
    for bad in ("lots", "-1GB", "0", "12 parsecs", True):
        with pytest.raises(DataError):
            cache_mod.parse_size(bad)
    assert cache_mod.parse_size("1000000TB") == 10 ** 18  # 1 EB, the largest size
    for huge in ("1000001TB", "1" + "0" * 400 + "GB", 10 ** 400, float("inf")):
        with pytest.raises(DataError, match="is out of range: at most 1 EB"):
            cache_mod.parse_size(huge)


@pytest.mark.skipif(not (CELEBA / "list_eval_partition.txt").is_file(), reason="../shared/datasets/celeba is absent")
def test_real_celeba_subset():
    names = read_partition(CELEBA / "list_eval_partition.txt")
    assert [len(names[s]) for s in ("train", "valid", "test")] == [162770, 19867, 19962]
    plan = celeba_plan(CELEBA, image_size=(64, 64), crop=(148, 148))
    assert [len(plan.files[s]) for s in ("train", "valid", "test")] == [4560, 780, 660]
    ds = load_dataset("celeba", CELEBA, crop=(148, 148), image_size=(32, 32))
    assert ds.image_shape == (3, 32, 32) and (len(ds.train), len(ds.valid), len(ds.test)) == (4560, 780, 660)
    assert 0.25 < float(ds.test.materialize().mean()) < 0.6  # real faces, not blank


def test_learning_rate_warm_up_scales_the_first_steps(tmp_path):
    from aevb.optimizers import warmup_factor

    assert [warmup_factor(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0
    moved = {}
    for warm in (0, 10 ** 9):  # a huge warm-up: every step of the epoch at lr * step / 1e9
        cfg = tiny_config("digits", epochs=1)
        cfg.optim.optimizer, cfg.optim.lr, cfg.optim.warmup_steps = "sgd", 0.1, warm
        tr = Trainer.new(cfg, tmp_path / f"w{warm}")
        before = [p.detach().clone() for p in tr.model.parameters()]
        tr.fit()
        assert tr.optimizer.param_groups[0]["lr"] == 0.1  # the schedule's rate is restored
        moved[warm] = max(float((p.detach() - b).abs().max()) for p, b in zip(tr.model.parameters(), before))
    assert moved[0] > 1e-2 and moved[10 ** 9] < 1e-6, moved  # 1e-6: about 25 steps of lr * 25 / 1e9
