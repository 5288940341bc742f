"""Novelty scores of new data: the complexity term is the compressor's length, the novelty column
is -log2 p(x) minus it, the likelihood ratio is the difference of two runs' bounds, percentiles
rank by the score asked for, the typicality test is its formula, and a trained digits model finds
inverted digits more novel than its own test digits."""
import bz2
import csv
import json
import math
import zlib

import numpy as np
import pytest
import torch

from aevb import fit
from aevb.cli import main
from aevb.data.base import Split
from aevb.errors import ConfigError, DataError, RunError
from aevb.newdata import complexity_bits, compressed_bits, typicality_test
from aevb.newdata.novelty import COMPRESSORS, percentile_of
from aevb.runs import Run, write_marker
from aevb.training import Trainer
from aevb.training.objective import binarize_batch

from conftest import tiny_config

LN2 = math.log(2)


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_thread):
    """Digits, statically binarized (so -log2 p(x) is a code length in bits), 8 epochs."""
    out = tmp_path_factory.mktemp("novelty") / "run"
    Trainer.new(tiny_config(data={"binarize": "static"}, train={"epochs": 8, "images_every": 0}), out).fit()
    return Run(out)


@pytest.fixture(scope="module")
def background(run):
    """The run's background model, trained as a user does: aevb train --background-of."""
    out = run.path.parent / "background"
    assert main(["train", "--background-of", str(run.path), "--epochs", "2", "--out", str(out)]) == 0
    return Run(out)


# ------------------------------------------------------------------ the complexity term
def test_complexity_is_eight_times_the_compressed_length_of_the_8_bit_image():
    rng = np.random.default_rng(0)
    img = (rng.random((5, 7, 1)) * 256).astype(np.uint8)
    def deflate(b):  # raw deflate at zlib's default level
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        return c.compress(b) + c.flush()

    for name, compress in (("zlib", deflate), ("bz2", lambda b: bz2.compress(b, 9))):
        assert compressed_bits(img[None], name)[0] == 8 * len(compress(img.tobytes()))
    # a split's rows, in [0, 1], become round(255 x) before compression: a binary row is its 0/255 picture
    rows = torch.tensor([[0.0, 1.0, 1.0, 0.0, 1.0, 0.0], [0.5, 0.25, 1.0, 0.0, 0.0, 0.0]])
    got = complexity_bits(Split(rows), (1, 2, 3), "zlib")
    want = [8 * len(deflate(bytes([0, 255, 255, 0, 255, 0]))), 8 * len(deflate(bytes([128, 64, 255, 0, 0, 0])))]
    assert got.tolist() == want
    # batches of one row (a byte budget below one row's 24 bytes of float32) give the same bits
    assert complexity_bits(Split(rows), (1, 2, 3), "zlib", batch_bytes=1).tolist() == want
    png = compressed_bits(np.zeros((1, 4, 4, 1), np.uint8), "png")[0]
    assert png == 8 * len(COMPRESSORS["png"](np.zeros((4, 4, 1), np.uint8))) and png > 8 * 40  # PNG's own headers


def test_the_novelty_column_is_minus_log2_p_minus_the_complexity(run):
    s = run.score("digits:test", k=4, seed=2)
    # binary data under a Bernoulli likelihood: L_k is a log-probability, -log2 p(x) = -L_k / ln 2
    assert np.array_equal(s.novelty, -s.lk / LN2 - s.complexity)
    x = run.preprocess("digits:test").split.materialize()
    assert np.array_equal(s.complexity, compressed_bits(np.round(x.numpy() * 255).astype(np.uint8)
                                                        .reshape(-1, 8, 8, 1), "zlib"))
    png = run.score("digits:test", k=4, seed=2, compressor="png")
    assert np.array_equal(png.lk, s.lk) and not np.array_equal(png.complexity, s.complexity)
    none = run.score("digits:test", k=4, seed=2, compressor=None)
    assert "novelty" not in none and "complexity" not in none


def test_inverted_digits_are_more_novel_than_test_digits(run):
    test = run.score("digits:test", k=4)
    x = run.load_data(progress=False).test.materialize().numpy()
    inverted = run.score((1 - x).astype(np.float32), k=4)
    assert np.median(inverted.novelty) > np.quantile(test.novelty, 0.95)
    assert np.mean(inverted.novelty > np.median(test.novelty)) > 0.95


# ------------------------------------------------------------------ the likelihood ratio
def test_background_of_trains_the_runs_settings_on_perturbed_data(run, background):
    mine, theirs = (json.loads((r.path / "config.json").read_text()) for r in (run, background))
    assert theirs["data"]["perturb"] == 0.2 and mine["data"]["perturb"] == 0.0
    assert theirs["model"] == mine["model"] and theirs["train"]["epochs"] == 2
    assert {k: v for k, v in theirs["data"].items() if k != "perturb"} == \
        {k: v for k, v in mine["data"].items() if k != "perturb"}


def test_lr_is_the_difference_of_the_two_runs_bounds(run, background, tmp_path):
    s = run.score("digits:test", k=5, seed=1, background=background.path)
    own, bg = run.score("digits:test", k=5, seed=1), background.score("digits:test", k=5, seed=1)
    assert np.array_equal(s.lk, own.lk) and np.array_equal(s.background_lk, bg.lk)
    assert np.array_equal(s.lr, bg.lk - own.lk)
    assert main(["score", str(run.path), "--data", "digits:test", "--k", "5", "--seed", "1", "--background",
                 str(background.path), "--out", str(tmp_path / "s.npz"), "--reference", "test", "--rank-by", "lr",
                 "--flag-above", "95", "--no-progress"]) == 0
    got = np.load(tmp_path / "s.npz")
    assert np.array_equal(got["lr"], s.lr)
    assert np.array_equal(got["percentile"], percentile_of(s.lr, np.sort(s.lr)))  # its own test split
    assert np.array_equal(got["flag"], got["percentile"] > 95)


def test_a_background_that_cannot_be_compared_is_refused(run, background, tmp_path):
    with pytest.raises(ConfigError, match="is the run itself"):
        run.score("digits:test", background=run.path)
    other = tmp_path / "grey"
    Trainer.new(tiny_config(train={"epochs": 1, "images_every": 0}), other).fit()  # not binarized
    with pytest.raises(DataError, match="binarize None there, 'static' here"):
        run.score("digits:test", background=other)
    stopped = tmp_path / "stopped"
    import shutil

    shutil.copytree(background.path, stopped)
    write_marker(stopped, "interrupted", epoch=1)
    with pytest.raises(RunError, match="background: .* is not finished"):
        run.score("digits:test", background=stopped)
    with pytest.raises(ConfigError, match="lr is the likelihood ratio against a background run"):
        run.score("digits:test", reference="test", rank_by="lr")


# ------------------------------------------------------------------ percentiles by the chosen score
def test_percentiles_rank_by_the_chosen_score(run, tmp_path):
    for rank_by, col, sign in (("novelty", "novelty", 1), ("lk", "lk", -1), ("elbo", "elbo", -1)):
        out = tmp_path / f"{rank_by}.csv"
        assert main(["score", str(run.path), "--data", "digits:test", "--k", "3", "--out", str(out),
                     "--reference", "test", "--rank-by", rank_by, "--no-progress"]) == 0
        rows = list(csv.DictReader(open(out)))
        item = np.array([float(r[col]) for r in rows]) * sign
        pct = np.array([float(r["percentile"]) for r in rows])
        # the same items as the reference: the share of the split strictly less novel than each item
        want = np.array([100.0 * np.mean(item < v) for v in item])
        np.testing.assert_allclose(pct, want, rtol=0, atol=1e-9)
    assert percentile_of(np.array([0.0, 2.5, 9.0]), np.array([1.0, 2.0, 3.0, 4.0])).tolist() == [0.0, 50.0, 100.0]


# ------------------------------------------------------------------ typicality of a set
def test_typicality_statistic_threshold_and_p_value_by_hand():
    nll, train, ref = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 4.0]), np.array([1.0, 3.0, 5.0, 7.0])
    t = typicality_test(nll, train, ref, bootstrap=50, alpha=0.1, seed=7)
    entropy = 8 / 3
    assert t.entropy == pytest.approx(entropy) and t.statistic == pytest.approx(abs(2.0 - entropy))
    draws = np.random.default_rng(7).integers(0, 4, size=(50, 3))
    boot = np.abs(ref[draws].mean(1) - entropy)
    assert t.threshold == pytest.approx(np.quantile(boot, 0.9))
    assert t.p_value == pytest.approx((1 + np.sum(boot >= t.statistic)) / 51)
    assert t.novel == (t.statistic > t.threshold) and t.n == 3


def test_typicality_of_a_set(run, capsys, tmp_path):
    own = run.typicality("digits:test", k=2, bootstrap=200)
    assert not own.novel and own.p_value > 0.05 and own.train_items == len(run.load_data(progress=False).train)
    x = run.load_data(progress=False).test.materialize().numpy()[:50]
    inverted = run.typicality((1 - x).astype(np.float32), k=2, bootstrap=200)
    assert inverted.novel and inverted.p_value < 0.01
    assert main(["score", str(run.path), "--data", "digits:test", "--k", "2", "--typicality",
                 "--out", str(tmp_path / "s.csv"), "--no-progress"]) == 0
    assert "typicality of the 359 items" in capsys.readouterr().out


# ------------------------------------------------------------------ the perturbation of a background run
def test_perturbation_replaces_a_share_of_values_by_random_levels():
    torch.manual_seed(0)
    x = torch.full((200, 100), 100 / 255)
    y = binarize_batch(x, False, 0.3, levels=256)
    changed = (y != x).float().mean().item()
    assert 0.27 < changed < 0.31  # 0.3 x (255/256): a drawn level may be the value itself
    assert torch.equal(torch.round(y * 255), y * 255) or torch.allclose(torch.round(y * 255) / 255, y)
    b = binarize_batch(torch.rand(50, 40), True, 0.5)  # after dynamic binarization: binary levels
    assert set(b.unique().tolist()) <= {0.0, 1.0}
    assert binarize_batch(x, False) is x and binarize_batch(x, False, 0.0, 256) is x


def test_perturb_is_a_setting_of_fit(tmp_path, one_thread):
    run = fit(data=torch.rand(64, 16), perturb=0.2, epochs=1, out=tmp_path / "r", progress=False,
              tensorboard=False, report=False, images_every=0)
    assert run.config.data.perturb == 0.2
    with pytest.raises(ConfigError, match="perturb"):
        fit(data=torch.rand(64, 16), perturb=1.0, epochs=1, out=tmp_path / "r2", progress=False)
