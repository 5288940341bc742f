"""A trained run on new data: the run's own preprocessing, codes, scores, reconstructions and
decoded codes agree with the numbers the rest of aevb gives for the same rows."""
import csv
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aevb.bounds import evaluate_bounds, lk_standard_error, posterior_means
from aevb.cli import main
from aevb.errors import ConfigError, DataError, RunError
from aevb.evaluate import evaluate_run
from aevb.images import png_bytes, to_images
from aevb.newdata import Codes, Scores, outputs, read_codes, tables, write_table
from aevb.newdata.novelty import percentile_of
from aevb.runs import Run, write_marker
from aevb.sampling import reconstructions
from aevb.training import Trainer

from conftest import tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("newdata") / "run"
    Trainer.new(tiny_config(train={"epochs": 2}), out).fit()
    return Run(out)


@pytest.fixture(scope="module")
def eight_bit(run, tmp_path_factory):
    """The run's first 30 test images on 8-bit levels: as PNGs in a folder (two sub-folders), and
    as a uint8 array file with the same rows."""
    root = tmp_path_factory.mktemp("pictures")
    x = run.load_data(progress=False).test.rows(0, 30)
    imgs = to_images(x, (1, 8, 8))  # uint8 [30, 8, 8, 1]
    names = []
    for i, img in enumerate(imgs):
        name = f"{'a' if i < 15 else 'b'}/img{i:02d}.png"
        (root / "png" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "png" / name).write_bytes(png_bytes(img))
        names.append(name)
    np.save(root / "rows.npy", imgs[..., 0])
    return {"folder": root / "png", "array": root / "rows.npy", "names": names,
            "x": torch.from_numpy(imgs[..., 0].reshape(30, 64).astype(np.float32) / 255)}


# ------------------------------------------------------------------ preprocessing
def test_own_named_split_is_the_runs_split(run):
    items = run.preprocess("digits:test")
    test = run.load_data(progress=False).test
    assert items.ids[:3] == ["0", "1", "2"] and len(items) == len(test)
    assert torch.equal(items.split.materialize(), test.materialize())


def test_folder_and_array_give_the_same_rows_with_their_identities(run, eight_bit):
    folder = run.preprocess(f"folder:{eight_bit['folder']}")
    array = run.preprocess(f"array:{eight_bit['array']}")
    assert folder.ids == eight_bit["names"]  # paths relative to the folder, in sorted order
    assert array.ids == [str(i) for i in range(30)]
    assert torch.equal(folder.split.materialize(), eight_bit["x"])
    assert torch.equal(array.split.materialize(), eight_bit["x"])
    assert folder.kind == array.kind == "unit" and folder.levels == array.levels == 256
    files = [eight_bit["folder"] / n for n in eight_bit["names"][:3]]
    listed = run.preprocess(files)
    assert listed.ids == [str(f) for f in files]
    assert torch.equal(listed.split.materialize(), eight_bit["x"][:3])
    one = run.preprocess(str(files[1]))
    assert torch.equal(one.split.materialize(), eight_bit["x"][1:2])


def test_python_objects_go_through_the_same_path(run, eight_bit):
    pil = [Image.open(eight_bit["folder"] / n) for n in eight_bit["names"][:4]]
    assert torch.equal(run.preprocess(pil).split.materialize(), eight_bit["x"][:4])
    u8 = np.load(eight_bit["array"])
    assert torch.equal(run.preprocess(u8).split.materialize(), eight_bit["x"])
    assert torch.equal(run.preprocess(torch.from_numpy(u8)).split.materialize(), eight_bit["x"])
    flat = eight_bit["x"].numpy().reshape(30, 64)  # floats in [0, 1], one row per item
    assert torch.equal(run.preprocess(flat).split.materialize(), eight_bit["x"])


def test_data_that_do_not_fit_are_refused_naming_both_shapes(run, tmp_path):
    for i in range(2):
        Image.fromarray(np.full((28, 28), 40 * i, np.uint8)).save(tmp_path / f"g{i}.png")
    with pytest.raises(DataError) as e:
        run.preprocess(f"folder:{tmp_path}")
    msg = str(e.value)
    assert "gives grey 28x28 images (1x28x28 = 784 values)" in msg
    assert "takes grey 8x8 images (1x8x8 = 64 values)" in msg and "\n" not in msg
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(rgb / "c.png")
    with pytest.raises(DataError, match=r"gives RGB 8x8 images \(3x8x8 = 192 values\)"):
        run.preprocess(f"folder:{rgb}")
    with pytest.raises(DataError, match="real values outside \\[0, 1\\].*Bernoulli"):
        run.preprocess(np.random.default_rng(0).normal(size=(5, 64)).astype(np.float32) * 3)
    with pytest.raises(DataError, match="holds no codes|no items|expected \\[N, ...\\] with N > 0"):
        run.preprocess(np.zeros((0, 64), np.float32))


def test_unreadable_images_are_listed_or_left_out(run, eight_bit, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for n in eight_bit["names"][:3]:
        (folder / Path(n).name).write_bytes((eight_bit["folder"] / n).read_bytes())
    (folder / "img01x.png").write_bytes(b"")
    with pytest.raises(DataError, match="(?s)1 image file\\(s\\) could not be read.*img01x.png"):
        run.preprocess(f"folder:{folder}")
    items = run.preprocess(f"folder:{folder}", skip_bad_images=True)
    assert items.ids == ["img00.png", "img01.png", "img02.png"]
    assert len(items.skipped) == 1 and "img01x.png" in items.skipped[0]
    assert torch.equal(items.split.materialize(), eight_bit["x"][:3])


def test_a_statically_binarized_run_binarizes_new_data(tmp_path, one_thread, eight_bit):
    Trainer.new(tiny_config(data={"binarize": "static"}, train={"epochs": 1}), tmp_path / "bin").fit()
    run = Run(tmp_path / "bin")
    own = run.preprocess("digits:test")
    assert own.kind == "binary" and torch.equal(own.split.materialize(), run.load_data(progress=False).test.materialize())
    new = run.preprocess(f"array:{eight_bit['array']}")
    assert new.kind == "binary" and new.levels == 2
    values = new.split.materialize()
    assert set(values.unique().tolist()) <= {0.0, 1.0}
    again = run.preprocess(f"folder:{eight_bit['folder']}")  # the same draw for the same rows
    assert torch.equal(again.split.materialize(), values)
    scores = run.score(own, k=3)  # binary data under a Bernoulli: bits/dim are an exact -log2 p / D
    assert np.allclose(scores["bpd_lk"], -scores["lk"] / (own.dim * np.log(2)), rtol=0, atol=1e-12)
    assert np.allclose(scores["bpd_elbo"], -scores["elbo"] / (own.dim * np.log(2)), rtol=0, atol=1e-12)


# ------------------------------------------------------------------ codes
def test_encode_of_the_test_split_equals_the_posterior_means(run):
    codes = run.encode("digits:test")
    model, test = run.load_model(), run.load_data(progress=False).test
    assert np.array_equal(codes["mu"], posterior_means(model, test).numpy())
    with torch.no_grad():
        _, log_var = model.encoder_params(test.rows(0, 10))
    np.testing.assert_allclose(codes["log_var"][:10], log_var.double().numpy(), rtol=1e-6, atol=1e-6)
    assert list(codes["id"][:2]) == ["0", "1"]


def test_codes_and_scores_are_tables_with_names(run, eight_bit):
    src = f"folder:{eight_bit['folder']}"
    codes = run.encode(src, samples=2, seed=5)
    assert isinstance(codes, Codes) and len(codes) == 30 and codes.ids == eight_bit["names"]
    assert list(codes.keys()) == list(codes) == ["id", "mu", "log_var", "z"] and "mu" in codes
    assert codes.mu is codes["mu"] and codes.mu.shape == (30, 3) and codes.z.shape == (30, 2, 3)
    assert np.array_equal(dict(codes)["log_var"], codes.log_var)
    assert run.encode(src).z is None
    scores = run.score(src, k=3)
    assert isinstance(scores, Scores) and list(scores) == ["id", "elbo", "lk", "lk_se", "complexity", "novelty"]
    assert scores.lk is scores["lk"] and scores.lk.shape == (30,)
    names, m = scores.matrix()
    assert names == ["elbo", "lk", "lk_se", "complexity", "novelty"] and np.array_equal(m[:, 1], scores.lk)
    with pytest.raises(AttributeError, match="no attribute or column 'nope'; its columns are id, elbo, lk, lk_se"):
        scores.nope
    with pytest.raises(KeyError, match="'nope' is not a column"):
        scores["nope"]


def test_encode_to_pandas_and_back_through_decode(run, eight_bit):
    pd = pytest.importorskip("pandas")
    src = f"folder:{eight_bit['folder']}"
    codes = run.encode(src, samples=2)
    df = codes.to_pandas()
    assert isinstance(df, pd.DataFrame) and df.shape == (30, 1 + 3 + 3 + 6)
    assert list(df.columns[:5]) == ["id", "mu_0", "mu_1", "mu_2", "log_var_0"] and df.columns[-1] == "z_1_2"
    assert list(df["id"]) == eight_bit["names"]
    assert df["mu_2"].tolist() == codes.mu[:, 2].tolist() and df["z_1_0"].tolist() == codes.z[:, 1, 0].tolist()
    images = run.reconstruct(src)
    assert torch.equal(run.decode(df), images)  # its mu_j columns
    assert torch.equal(run.decode(codes), images)  # its mu
    assert torch.equal(run.decode(df[["mu_0", "mu_1", "mu_2"]].to_numpy()), images)
    scores = run.score(src, k=3).to_pandas()
    assert list(scores.columns) == ["id", "elbo", "lk", "lk_se", "complexity", "novelty"] and len(scores) == 30
    with pytest.raises(DataError) as e:  # not a data frame of the column names
        pd.DataFrame(codes)
    assert str(e.value) == ("a Codes table is not one array: use codes.to_pandas() for a pandas DataFrame (one row "
                            "per item, a column per value) or codes.mu for the [N, J] matrix")
    with pytest.raises(DataError, match=r"use scores.to_pandas\(\) .* or scores.matrix\(\) for \(column names"):
        np.asarray(run.score(src, k=1))


def test_to_pandas_without_pandas_says_how_to_install_it(run, monkeypatch):
    codes = run.encode(np.zeros((2, 64), np.float32))
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas raises ImportError
    with pytest.raises(ImportError) as e:
        codes.to_pandas()
    assert str(e.value) == "Codes.to_pandas() needs pandas, which is not installed: pip install pandas"


def test_encode_command_writes_every_format_with_seeded_draws(run, eight_bit, tmp_path, capsys):
    src = f"folder:{eight_bit['folder']}"
    for ext in ("npz", "csv"):
        assert main(["encode", str(run.path), "--data", src, "--out", str(tmp_path / f"c.{ext}"),
                     "--samples", "4", "--seed", "7", "--no-progress"]) == 0
    want = run.encode(src)
    z = np.load(tmp_path / "c.npz")
    assert list(z["id"]) == eight_bit["names"]
    assert np.array_equal(z["mu"], want["mu"]) and np.array_equal(z["log_var"], want["log_var"])
    eps = torch.randn(30, 4, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64).numpy()
    np.testing.assert_allclose(z["z"], z["mu"][:, None] + np.exp(0.5 * z["log_var"])[:, None] * eps, rtol=1e-12)
    rows = list(csv.DictReader(open(tmp_path / "c.csv")))
    assert rows[3]["id"] == eight_bit["names"][3]
    assert float(rows[3]["mu_2"]) == z["mu"][3, 2] and float(rows[3]["z_1_0"]) == z["z"][3, 1, 0]


def test_a_npy_file_is_the_matrix_of_posterior_means_with_the_ids_beside_it(run, eight_bit, tmp_path, capsys):
    src = f"folder:{eight_bit['folder']}"
    for ext in ("npz", "npy"):
        assert main(["encode", str(run.path), "--data", src, "--out", str(tmp_path / f"c.{ext}"), "--no-progress"]) == 0
    assert "a float matrix [30, 3]: mu_0, mu_1, mu_2; ids in" in capsys.readouterr().out
    m, z = np.load(tmp_path / "c.npy"), np.load(tmp_path / "c.npz")
    assert m.dtype == np.float64 and m.shape == (30, 3) and np.array_equal(m, z["mu"])
    assert (tmp_path / "c.ids.txt").read_text().splitlines() == eight_bit["names"] == list(z["id"])
    # aevb decode and run.decode read it back, with its ids
    assert main(["decode", str(run.path), "--z", str(tmp_path / "c.npy"), "--out", str(tmp_path / "a")]) == 0
    assert main(["decode", str(run.path), "--z", str(tmp_path / "c.npz"), "--out", str(tmp_path / "b")]) == 0
    for name in eight_bit["names"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert torch.equal(run.decode(tmp_path / "c.npy"), run.decode(z["mu"]))
    assert torch.equal(run.decode(str(tmp_path / "c.npz")), run.decode(z["mu"]))
    # an ids file of another matrix is refused, not used to name the wrong rows
    (tmp_path / "c.ids.txt").write_text("a\nb\n")
    with pytest.raises(DataError, match=r"c.ids.txt beside it lists 2 ids for 30 rows; it belongs to another file"):
        run.decode(tmp_path / "c.npy")
    # scores: elbo, lk, lk_se (then the columns that were asked for) as one matrix
    assert main(["score", str(run.path), "--data", src, "--k", "3", "--out", str(tmp_path / "s.npy"),
                 "--reference", "test", "--flag-above", "50", "--no-progress"]) == 0
    assert main(["score", str(run.path), "--data", src, "--k", "3", "--out", str(tmp_path / "s.npz"),
                 "--reference", "test", "--flag-above", "50", "--no-progress"]) == 0
    assert "a float matrix [30, 7]: elbo, lk, lk_se, ..., flag; ids in" in capsys.readouterr().out
    m, s = np.load(tmp_path / "s.npy"), np.load(tmp_path / "s.npz")
    for j, name in enumerate(["elbo", "lk", "lk_se", "complexity", "novelty", "percentile", "flag"]):
        assert np.array_equal(m[:, j], s[name].astype(np.float64)), name
    assert (tmp_path / "s.ids.txt").read_text().splitlines() == eight_bit["names"]


def test_the_ids_file_of_a_npy_table_keeps_any_id_but_a_line_break(tmp_path):
    mu = np.arange(6.0).reshape(3, 2)
    ids = ["a\u2028b.png", "tab\there", "c,\"d\".png"]  # a Unicode line separator, a tab, CSV's specials
    write_table(tmp_path / "c.npy", {"id": np.asarray(ids), "mu": mu})
    got_ids, codes = read_codes(tmp_path / "c.npy", 2)
    assert got_ids == ids and torch.equal(codes, torch.from_numpy(mu).float())
    with pytest.raises(DataError, match=r"the item 'x\\ny' has a line break in its id.*write a .npz or .csv file"):
        write_table(tmp_path / "d.npy", {"id": np.asarray(["x\ny", "z"]), "mu": mu[:2]})
    assert not (tmp_path / "d.npy").exists() and not (tmp_path / "d.ids.txt").exists()


@pytest.mark.parametrize("command", ["encode", "score"])
def test_an_id_with_a_line_break_is_refused_before_the_work(run, eight_bit, tmp_path, capsys, monkeypatch, command):
    """A .npy table cannot hold an id with a line break: said before the model sees an item."""
    folder = tmp_path / "pics"
    folder.mkdir()
    shutil.copy(eight_bit["folder"] / eight_bit["names"][0], folder / "two\nlines.png")
    shutil.copy(eight_bit["folder"] / eight_bit["names"][1], folder / "plain.png")

    def never(*a, **k):
        raise AssertionError("the items were computed before the ids were checked")

    monkeypatch.setattr("aevb.commands.encode.encode_items", never)
    monkeypatch.setattr("aevb.commands.score.score_novelty", never)
    out = tmp_path / "t.npy"
    argv = [command, str(run.path), "--data", f"folder:{folder}", "--out", str(out), "--no-progress"]
    assert main(argv + (["--k", "1"] if command == "score" else [])) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "has a line break in its id" in err[0] and "write a .npz or .csv file" in err[0], err
    assert not out.exists() and not (tmp_path / "t.ids.txt").exists()


def test_a_npy_file_refuses_draws_and_an_ids_path_that_is_a_folder(run, tmp_path, capsys):
    argv = ["encode", str(run.path), "--data", "digits:test", "--out", str(tmp_path / "c.npy"), "--no-progress"]
    assert main(argv + ["--samples", "2"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"aevb encode: error: --out {tmp_path / 'c.npy'}: a .npy file holds the posterior means only (a float "
        "matrix [N, J]), not the 2 draws of --samples; write a .npz or .csv file")
    (tmp_path / "c.ids.txt").mkdir()
    assert main(argv) == 2
    assert f"the ids of its rows go to {tmp_path / 'c.ids.txt'} beside it, which is a folder" in capsys.readouterr().err
    assert not (tmp_path / "c.npy").exists()


def test_image_files_listed_on_the_command_line(run, eight_bit, tmp_path, capsys):
    folder, names = eight_bit["folder"], eight_bit["names"]
    want = run.encode(f"folder:{folder}")
    for rows in (slice(0, 3), slice(3, 6), slice(0, 3)):  # two lists of as many files in one folder, then the first again
        files = [str(folder / n) for n in names[rows]]
        out = tmp_path / f"{rows.start}.npz"
        assert main(["encode", str(run.path), "--data", *files, "--out", str(out), "--no-progress"]) == 0
        got = np.load(out)
        assert list(got["id"]) == files  # the same pixels as the folder's rows (another batch: rounding only)
        np.testing.assert_allclose(got["mu"], want["mu"][rows], rtol=1e-5, atol=1e-6)
        assert "changed since" not in capsys.readouterr().err  # each list has a cache of its own
    assert main(["encode", str(run.path), "--data", files[0], f"folder:{folder}", "--out", str(tmp_path / "x.npz")]) == 2
    assert "a list of sources must be image files" in capsys.readouterr().err


def test_csv_written_in_blocks_is_the_same_file(run, eight_bit, tmp_path, monkeypatch):
    codes = {"id": np.asarray(eight_bit["names"]), **run.encode(f"folder:{eight_bit['folder']}", samples=2)}
    write_table(tmp_path / "whole.csv", codes)
    monkeypatch.setattr(tables, "CSV_BLOCK", 7)  # 30 rows: blocks of 7, the last of 2
    write_table(tmp_path / "blocks.csv", codes)
    assert (tmp_path / "blocks.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    assert len((tmp_path / "whole.csv").read_text().splitlines()) == 31


def test_draws_beyond_half_the_memory_are_refused_before_any_work(run, tmp_path, monkeypatch, capsys):
    need = 8 * 359 * 100 * 3  # digits:test, 100 draws of 3 latents each, float64
    argv = ["encode", str(run.path), "--data", "digits:test", "--samples", "100", "--out", str(tmp_path / "z.npz"),
            "--no-progress"]
    monkeypatch.setattr(outputs, "physical_memory", lambda: 2 * need - 2)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "100 draws for each of 359 items of 3 latent dimensions make 861.6 kB of codes" in err and "--samples" in err
    assert not (tmp_path / "z.npz").exists()
    monkeypatch.setattr(outputs, "physical_memory", lambda: 2 * need)
    assert main(argv) == 0 and np.load(tmp_path / "z.npz")["z"].shape == (359, 100, 3)


# ------------------------------------------------------------------ scores
def test_score_equals_evaluate_per_datapoint_for_the_same_seed(run):
    got = run.score("digits:test", k=7, seed=3)
    ev = evaluate_run(run, "test", k=7, seed=3, per_datapoint=True)["per_datapoint"]
    assert np.array_equal(got["lk"], ev["lk"]) and np.array_equal(got["elbo"], ev["elbo"])
    assert np.all(got["lk_se"] > 0) and np.all(np.isfinite(got["lk_se"]))


def test_the_standard_error_of_lk_is_that_of_the_importance_weights():
    log_w = torch.randn(4, 50, dtype=torch.float64) * 2 - 30
    w = np.exp(log_w.numpy() + 30)
    se = lk_standard_error(torch.logsumexp(log_w, 1), torch.logsumexp(2 * log_w, 1), 50)
    want = w.std(1, ddof=1) / math.sqrt(50) / w.mean(1)  # relative standard error of mean(w)
    np.testing.assert_allclose(se.numpy(), want, rtol=1e-10)
    assert torch.isnan(lk_standard_error(torch.zeros(2), torch.zeros(2), 1)).all()


def test_lk_se_matches_the_spread_of_lk_over_seeds(run):
    model, x = run.load_model(), run.load_data(progress=False).test.rows(0, 8)
    se = evaluate_bounds(model, x, k=50, seed=0).lk_se
    spread = torch.stack([evaluate_bounds(model, x, k=50, seed=s).lk for s in range(30)]).std(0)
    ratio = (spread / se).numpy()
    assert 0.6 < np.median(ratio) < 1.6, ratio


def test_score_command_bits_percentiles_and_flags(run, eight_bit, tmp_path, capsys):
    out = tmp_path / "s.npz"
    assert main(["score", str(run.path), "--data", f"array:{eight_bit['array']}", "--k", "5", "--out", str(out),
                 "--reference", "test", "--rank-by", "lk", "--flag-above", "90", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "quantile" in text and "L_5" in text and "flagged" in text
    s = np.load(out)
    want = run.score(f"array:{eight_bit['array']}", k=5)
    assert np.array_equal(s["lk"], want["lk"]) and np.array_equal(s["lk_se"], want["lk_se"])
    assert "bpd_lk" not in s.files  # a Bernoulli likelihood on grey levels: no bits/dim
    ref = np.sort(run.score("digits:test", k=5)["lk"])
    np.testing.assert_allclose(s["percentile"], [100.0 * np.mean(ref > v) for v in s["lk"]])  # a higher L_k
    assert np.array_equal(s["percentile"], percentile_of(-s["lk"], np.sort(-ref)))
    assert np.array_equal(s["flag"], s["percentile"] > 90)


def test_score_gives_bits_per_dim_for_binary_data(run, tmp_path, capsys):
    binary = (np.random.default_rng(1).random((6, 64)) < 0.3).astype(np.uint8)
    np.save(tmp_path / "b.npy", binary)
    assert main(["score", str(run.path), "--data", f"array:{tmp_path / 'b.npy'}", "--k", "3",
                 "--out", str(tmp_path / "s.csv"), "--no-progress"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    for r in rows:
        assert float(r["bpd_lk"]) == pytest.approx(-float(r["lk"]) / (64 * math.log(2)), rel=1e-12)


def test_an_unfinished_run_is_used_only_when_allowed_and_as_it_is(run, tmp_path, capsys):
    stopped = tmp_path / "stopped"
    shutil.copytree(run.path, stopped)
    write_marker(stopped, "interrupted", epoch=2)
    argv = ["score", str(stopped), "--data", "digits:test", "--k", "3", "--out", str(tmp_path / "s.npz"),
            "--no-progress"]
    assert main(argv) == 2
    assert "is not finished (status 'interrupted') after epoch 2" in capsys.readouterr().err
    assert not (tmp_path / "s.npz").exists()
    assert main(argv + ["--allow-unfinished"]) == 0
    # the checkpoint it holds, unchanged: the scores of the same weights in the finished run
    assert np.array_equal(np.load(tmp_path / "s.npz")["lk"], run.score("digits:test", k=3)["lk"])


# ------------------------------------------------------------------ reconstructions and decoding
def test_a_folder_of_pngs_reconstructs_like_the_split(run, eight_bit, tmp_path, capsys):
    model = run.load_model()
    want = reconstructions(model, eight_bit["x"])
    got = run.reconstruct(f"folder:{eight_bit['folder']}")
    assert torch.equal(got, want)
    out = tmp_path / "rec"
    assert main(["reconstruct", str(run.path), "--data", f"folder:{eight_bit['folder']}", "--out", str(out),
                 "--no-progress"]) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == sorted(eight_bit["names"])
    for i, name in enumerate(eight_bit["names"][:5]):
        assert (out / name).read_bytes() == png_bytes(to_images(want[i:i + 1], (1, 8, 8))[0])
    assert not list(tmp_path.glob(".rec*"))  # the staging folder became --out


def test_decode_of_the_posterior_mean_equals_reconstruct(run, eight_bit, tmp_path, capsys):
    src = f"folder:{eight_bit['folder']}"
    assert torch.equal(run.decode(run.encode(src)["mu"]), run.reconstruct(src))
    assert main(["encode", str(run.path), "--data", src, "--out", str(tmp_path / "c.csv"), "--no-progress"]) == 0
    assert main(["decode", str(run.path), "--z", str(tmp_path / "c.csv"), "--out", str(tmp_path / "dec")]) == 0
    assert main(["reconstruct", str(run.path), "--data", src, "--out", str(tmp_path / "rec"), "--no-progress"]) == 0
    for name in eight_bit["names"]:
        assert (tmp_path / "dec" / name).read_bytes() == (tmp_path / "rec" / name).read_bytes()
    with pytest.raises(DataError, match=r"shape \(2, 4\) but the run's codes are \[N, 3\]"):
        run.decode(np.zeros((2, 4)))
    with pytest.raises(DataError, match="NaN"):
        run.decode(np.array([[0.0, np.nan, 1.0]]))


# ------------------------------------------------------------------ what the Python methods refuse
def test_the_methods_refuse_what_the_commands_refuse_naming_the_argument(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    x = np.zeros((2, 64), np.float32)
    assert len(run.encode(x, device=torch.device("cpu"), seed=3.0)) == 2  # a torch.device, a whole float
    refusals = [
        (lambda: run.encode(x, samples=-1), ConfigError, "samples must be in 0..10000; got -1"),
        (lambda: run.encode(x, samples=2.5), ConfigError, "samples must be a whole number of draws per item; got 2.5"),
        (lambda: run.score(x, k=2.5), ConfigError, "k must be a whole number of importance samples; got 2.5"),
        (lambda: run.score(x, k=0), ConfigError, "k must be a positive number of importance samples; got 0"),
        (lambda: run.score(x, k=-3), ConfigError, "k must be a positive number of importance samples; got -3"),
        (lambda: run.score(x, k=True), ConfigError, "k must be a whole number of importance samples; got True"),
        (lambda: run.encode(x, seed=-1), ConfigError, "seed must be in 0..4294967295; got -1"),
        (lambda: run.score(x, seed=1.5), ConfigError, "seed must be a whole number; got 1.5"),
        (lambda: run.encode(x, device="gpu7"), RunError,
         "device 'gpu7' is not a device name; use auto, cpu, cuda, cuda:N or mps"),
        (lambda: run.decode(np.zeros((1, 3)), device="cuda"), RunError,
         "device 'cuda' was asked for but CUDA is not available here; use device='cpu'"),
        (lambda: run.encode(Image.new("L", (0, 0))), DataError,
         "source: image 0 is 0x0 pixels (width x height), an image without pixels; give images of at least 1x1 "
         "pixels"),
        (lambda: run.decode(np.full((2, 3), 1e300)), DataError,
         "z holds 1e+300 in row 0, beyond float32 (largest 3.4e+38): the decoder cannot take it; a trained "
         "model's codes lie within a few units of 0, where its prior N(0, I) puts them"),
        (lambda: run.decode(str(tmp_path / "codes.npz")), DataError, f"z ({tmp_path / 'codes.npz'}): file not found"),
        (lambda: run.decode(np.ones((2, 3), complex)), DataError, "z holds complex128 values; codes are real numbers"),
        (lambda: run.encode(x, checkpoint="best"), RunError,
         f"{run.path} has no best checkpoint: the best epoch is the one with the highest validation bound, and this "
         "run was trained without a validation split. Use checkpoint='last' (the default), or train a run with a "
         "validation split (--validation N)"),
    ]
    for call, kind, line in refusals:
        with pytest.raises(kind) as e:
            call()
        assert str(e.value) == line
    with pytest.raises(DataError, match=r"^z is not an \[N, 3\] array of numbers \([^\n]+\)$"):
        run.decode([[0.0, 1.0, 2.0], [0.0]])  # rows of different lengths (numpy's reason in brackets)
    # the commands refuse the same values with the same line, naming their options
    argv = ["encode", str(run.path), "--data", "digits:test", "--out", str(tmp_path / "c.npz"), "--no-progress"]
    assert main(argv + ["--samples", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "aevb encode: error: --samples must be in 0..10000; got -1"
    assert main(["score", *argv[1:], "--k", "0"]) == 2
    assert capsys.readouterr().err.strip() == (
        "aevb score: error: --k must be a positive number of importance samples; got 0")
    assert not (tmp_path / "c.npz").exists()


def test_a_file_of_codes_is_read_by_decode(run, tmp_path):
    codes = run.encode("digits:test")
    write_table(tmp_path / "codes.npz", codes)
    assert torch.equal(run.decode(str(tmp_path / "codes.npz")), run.decode(codes.mu))
    np.save(tmp_path / "big.npy", np.full((3, 3), 1e300))
    with pytest.raises(DataError, match=r"^z \(.*big.npy\) holds 1e\+300 in row 0, beyond float32"):
        run.decode(tmp_path / "big.npy")


def test_codes_that_make_the_decoder_overflow_are_refused_in_one_line(run, tmp_path, monkeypatch, capsys):
    real = outputs.decode_means

    def overflowing(model, z, batch_size=None):  # as a Gaussian decoder's mean overflows for huge codes
        x = real(model, z, batch_size)
        x[z.abs().max(1).values > 1e30] = float("nan")
        return x

    monkeypatch.setattr(outputs, "decode_means", overflowing)
    z = np.zeros((1500, 3))
    z[1203, 1] = -3e35
    with pytest.raises(DataError) as e:
        run.decode(z)
    assert str(e.value) == ("z: the decoder overflows for 1 code(s), its output not finite (first in row 1203, largest "
                            "|value| 3e+35); a trained model's codes lie within a few units of 0, where its prior "
                            "N(0, I) puts them")
    np.save(tmp_path / "z.npy", z)
    assert main(["decode", str(run.path), "--z", str(tmp_path / "z.npy"), "--out", str(tmp_path / "dec")]) == 2
    assert f"--z {tmp_path / 'z.npy'}: the decoder overflows for 1 code(s), its output not finite (first in row " \
           "1203" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["z.npy"]  # no folder, no staging left


def test_items_prepared_for_another_run_are_refused_unless_prepared_the_same_way(run, tmp_path, one_thread):
    x = np.random.default_rng(0).random((4, 64)).astype(np.float32)
    Trainer.new(tiny_config(data={"binarize": "static"}, train={"epochs": 1}), tmp_path / "bin").fit()
    other = Run(tmp_path / "bin")
    with pytest.raises(DataError) as e:
        run.encode(other.preprocess(x))
    assert str(e.value) == (f"these items were prepared for the run {other.path.resolve()}, whose data settings "
                            f"differ from those of {run.path} (binarize 'static' there, None here); prepare them "
                            "for this run: run.preprocess(source)")
    shutil.copytree(run.path, tmp_path / "copy")  # prepared the same way: the same numbers
    items = Run(tmp_path / "copy").preprocess(x)
    assert np.array_equal(run.encode(items).mu, run.encode(x).mu)
    assert np.array_equal(other.encode(other.preprocess(x)).mu, other.encode(x).mu)


def test_python_messages_name_python_arguments(run, monkeypatch):
    monkeypatch.setattr(outputs, "physical_memory", lambda: 1000)
    with pytest.raises(DataError) as e:
        run.encode("digits:test", samples=100)
    assert "ask for fewer draws (samples), or encode the data in parts" in str(e.value) and "--" not in str(e.value)
    with pytest.raises(DataError) as e:
        run.decode(np.zeros((2, 4)))
    assert str(e.value) == "z has shape (2, 4) but the run's codes are [N, 3] (its latent dimension is 3)"


def test_reconstruct_without_data_keeps_its_grid(run, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["reconstruct", str(run.path), "--out", str(out), "-n", "4"]) == 0
    assert Image.open(out).size[0] > 0


# ------------------------------------------------------------------ the page docs/new-data.md
def test_the_pages_commands_and_python_example_run(run, eight_bit, tmp_path, monkeypatch, capsys):
    import shlex
    import shutil

    from helpers import aevb_argv, fenced_blocks, joined

    page = (Path(__file__).resolve().parents[1] / "docs" / "new-data.md").read_text()
    page = page.split("## Worked example")[0]  # its MNIST commands take minutes: the guide's run here
    (tmp_path / "runs").mkdir()
    shutil.copytree(run.path, tmp_path / "runs" / "digits")
    shutil.copytree(eight_bit["folder"], tmp_path / "my_pictures")
    monkeypatch.chdir(tmp_path)
    commands = [argv for lang, lines in fenced_blocks(page) if lang == "bash"
                for line in joined(lines) for argv in aevb_argv(line)]
    assert [a[0] for a in commands] == ["encode", "encode", "encode", "score", "reconstruct", "decode", "train", "score",
                                       "score"]
    for argv in commands:
        assert main(argv + (["--no-progress"] if argv[0] != "decode" else [])) == 0, shlex.join(argv)
    assert len(list((tmp_path / "reconstructions").rglob("*.png"))) == 30
    assert sorted(p.name for p in (tmp_path / "decoded").rglob("*.png")) == sorted(
        p.name for p in (tmp_path / "reconstructions").rglob("*.png"))
    code = next("\n".join(lines) for lang, lines in fenced_blocks(page) if lang == "python")
    scope = {}
    exec(compile(code, "docs/new-data.md", "exec"), scope)
    assert torch.equal(scope["recs"], scope["images"])
    assert list(scope["codes"]["id"]) == eight_bit["names"] and len(scope["scores"]["lk"]) == 359
    assert np.array_equal(np.load(tmp_path / "means.npy"), scope["codes"].mu)
    assert (tmp_path / "means.ids.txt").read_text().splitlines() == scope["codes"].ids


def test_a_real_data_set_of_another_shape_is_refused(run, shared_datasets, monkeypatch):
    monkeypatch.setenv("AEVB_DATA", str(shared_datasets))
    with pytest.raises(DataError) as e:
        run.preprocess("mnist:test")
    assert str(e.value) == ("mnist:test gives grey 28x28 images (1x28x28 = 784 values) but the run "
                            f"{run.path} takes grey 8x8 images (1x8x8 = 64 values); give grey 8x8 images "
                            "(1x8x8 = 64 values) or rows of 64 values")
