"""Evaluation: L_k against an exact log p(x), chunking, diagnostics, bits/dim and `aevb evaluate`."""
import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from torch import nn

from aevb import bounds as ev
from aevb.cli import main
from aevb.config import ModelConfig
from aevb.data import Dataset, Split
from aevb.distributions import GaussianFixed
from aevb.bounds import (ACTIVE_UNIT_THRESHOLD, NOISE_BLOCK, active_mask, active_unit_variances, evaluate_bounds,
                         kl_per_dimension, posterior_means)
from aevb.evaluate import bits_per_dim, bpd_convention, split_data, summarize
from aevb.model import VAE
from aevb.training import Trainer

from conftest import tiny_config
from aevb import metrics as M

LN2 = math.log(2.0)


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- a linear-Gaussian model
class FixedGaussianEncoder(nn.Module):
    """q(z|x) = N(A x + c, diag exp(log_var)): an affine mean and a constant variance."""

    def __init__(self, A, c, log_var):
        super().__init__()
        self.mean = nn.Linear(A.shape[1], A.shape[0]).double()
        with torch.no_grad():
            self.mean.weight.copy_(A)
            self.mean.bias.copy_(c)
        self.register_buffer("log_var", log_var.clone())

    def forward(self, x):
        return self.mean(x), self.log_var.expand(len(x), -1)


def linear_gaussian(d=6, j=3, s=0.5, seed=0):
    """x = W z + b + N(0, s^2 I), z ~ N(0, I), with orthogonal columns of W (so W^T W is diagonal and
    the exact posterior is a diagonal Gaussian). Returns (W, b, s, exact posterior (A, c, log_var))."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    scales = torch.tensor([2.0, 1.0, 0.6, 1.5, 0.8][:j], dtype=torch.float64)
    W = q[:, :j] * scales
    b = torch.randn(d, generator=g, dtype=torch.float64)
    wtw = W.T @ W
    assert torch.allclose(wtw, torch.diag(torch.diagonal(wtw)), atol=1e-12)
    post_var = 1.0 / (1.0 + torch.diagonal(wtw) / s ** 2)  # (I + W^T W / s^2)^-1, diagonal
    A = post_var[:, None] * W.T / s ** 2  # posterior mean = Sigma W^T (x - b) / s^2
    c = -A @ b
    return W, b, s, (A, c, post_var.log())


def build_vae(W, b, s, A, c, log_var):
    d, j = W.shape
    dec = nn.Linear(j, d).double()
    with torch.no_grad():
        dec.weight.copy_(W)
        dec.bias.copy_(b)
    return VAE(FixedGaussianEncoder(A, c, log_var), dec, GaussianFixed(sigma=s), j, data_dim=d).eval()


def exact_log_px(x, W, b, s):
    cov = (W @ W.T + s ** 2 * torch.eye(W.shape[0], dtype=torch.float64)).numpy()
    return torch.from_numpy(multivariate_normal(mean=b.numpy(), cov=cov).logpdf(x.numpy()))


def lg_data(W, b, s, n=25, seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, W.shape[1], generator=g, dtype=torch.float64)
    return z @ W.T + b + s * torch.randn(n, W.shape[0], generator=g, dtype=torch.float64)


def test_exact_posterior_gives_log_px_for_every_k():
    W, b, s, (A, c, lv) = linear_gaussian()
    model = build_vae(W, b, s, A, c, lv)
    x = lg_data(W, b, s)
    truth = exact_log_px(x, W, b, s)
    for k in (1, 7, 100):  # every importance weight equals p(x), so L_k = log p(x) exactly
        res = evaluate_bounds(model, x, k=k, seed=k)
        assert torch.allclose(res.lk, truth, atol=1e-9, rtol=0), (k, (res.lk - truth).abs().max())
    # the ELBO (MC reconstruction term + closed-form KL) equals log p(x) up to Monte Carlo error
    res = evaluate_bounds(model, x, k=4000, seed=0)
    assert (res.elbo - truth).abs().max() < 0.1 and abs(float((res.elbo - truth).mean())) < 0.015


def test_imperfect_q_approaches_log_px_as_k_grows():
    W, b, s, (A, c, lv) = linear_gaussian()
    # a q with a biased mean and a too-wide variance: a clear gap at k = 1
    model = build_vae(W, b, s, 0.95 * A, c + 0.2, lv + 0.5)
    x = lg_data(W, b, s, n=30)
    truth = exact_log_px(x, W, b, s)
    gaps = {}
    for k in (1, 10, 100, 5000):
        gaps[k] = float((truth - evaluate_bounds(model, x, k=k, seed=3).lk).mean())
    assert gaps[1] > 0.3  # the ELBO is well below log p(x)
    assert gaps[1] > gaps[10] > gaps[100] > gaps[5000] >= -0.01
    assert gaps[5000] < 0.01
    lk = evaluate_bounds(model, x, k=5000, seed=4).lk
    assert (lk - truth).abs().max() < 0.1 and (lk - truth).abs().mean() < 0.02  # per datapoint too


# ----------------------------------------------------------------------------- a Bernoulli model
def bernoulli_vae(d=20, j=4, hidden=24, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    cfg = ModelConfig(latent_dim=j, encoder_hidden=[hidden], likelihood="bernoulli", activation="tanh")
    model = VAE.from_config(cfg, d).to(dtype).eval()
    with torch.no_grad():  # a confident decoder and a poor (wide) q: a clear ELBO-to-L_k gap
        model.decoder.net[-1].weight.mul_(4.0)
        model.encoder.net[-1].bias[j:] += 1.0
    return model


def binary_data(n=200, d=20, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, d, generator=g) < 0.3).to(dtype)


def test_lk_rises_with_k_on_average_and_is_above_the_elbo():
    model = bernoulli_vae()
    x = binary_data()
    res = {k: evaluate_bounds(model, x, k=k, seed=11 + k) for k in (1, 5, 50, 500)}
    means = {k: float(r.lk.mean()) for k, r in res.items()}
    se = float(res[1].lk.std() / math.sqrt(len(x)))
    # L_1 is the ELBO: its mean agrees with the closed-form-KL ELBO of many samples
    assert abs(means[1] - float(res[500].elbo.mean())) < 4 * se
    assert means[1] < means[5] < means[50] < means[500]
    assert means[5] - means[1] > 0.3 and means[500] - means[50] > 0.05
    # L_k >= ELBO on the same data (ELBO with its own samples, closed-form KL)
    for k in (5, 50, 500):
        assert float((res[k].lk - res[k].elbo).mean()) > 0.2


def reference_lk(model, x, k, seed):
    """L_k from the model's own methods in the package's [k, B] convention, with the noise drawn
    exactly as the evaluator draws it (one generator, blocks of NOISE_BLOCK samples, batch first)."""
    g = torch.Generator().manual_seed(seed)
    blocks = -(-k // NOISE_BLOCK)
    eps = torch.cat([torch.randn((len(x), NOISE_BLOCK, model.latent_dim), generator=g, dtype=x.dtype)
                     for _ in range(blocks)], 1)[:, :k].transpose(0, 1)  # [k, B, J]
    with torch.no_grad():
        mu, log_var = model.encoder_params(x)
        z = mu + torch.exp(0.5 * log_var) * eps
        log_px_z = model.log_p_x_given_z(x, z)
        log_w = log_px_z + model.log_p_z(z) - model.log_q_z_given_x(z, mu, log_var)
    return torch.logsumexp(log_w, 0) - math.log(k), log_px_z.mean(0)


def test_evaluator_matches_a_direct_computation_with_the_same_samples():
    model = bernoulli_vae()
    x = binary_data(n=30)
    lk_ref, rec_ref = reference_lk(model, x, 150, seed=5)
    res = evaluate_bounds(model, x, k=150, batch_size=30, chunk=40, seed=5)
    assert torch.allclose(res.lk, lk_ref, atol=1e-10, rtol=0)
    assert torch.allclose(res.log_px_given_z, rec_ref, atol=1e-10, rtol=0)
    mu, log_var = model.encoder_params(x)
    kl = 0.5 * (mu ** 2 + log_var.exp() - 1 - log_var).sum(-1)
    assert torch.allclose(res.elbo, rec_ref - kl, atol=1e-10, rtol=0)


@pytest.mark.parametrize("chunk", [1, 13, NOISE_BLOCK, 100])
def test_chunked_and_unchunked_agree_to_float_precision(chunk):
    model = bernoulli_vae(dtype=torch.float32)
    x = binary_data(n=40, dtype=torch.float32)
    full = evaluate_bounds(model, x, k=300, batch_size=16, chunk=300, seed=2)
    part = evaluate_bounds(model, x, k=300, batch_size=16, chunk=chunk, seed=2, progress=True)
    assert part.chunk == chunk
    assert torch.allclose(part.lk, full.lk, rtol=1e-6, atol=1e-5)
    assert torch.allclose(part.elbo, full.elbo, rtol=1e-6, atol=1e-5)
    # and it is not trivially equal: another seed differs
    other = evaluate_bounds(model, x, k=300, batch_size=16, chunk=chunk, seed=3)
    assert (other.lk - full.lk).abs().max() > 1e-3


def test_the_engine_over_a_data_set_agrees_with_model_iw_bound_in_expectation():
    model = bernoulli_vae()
    x = binary_data(n=100)
    ours = evaluate_bounds(model, x, k=20, seed=0).lk
    torch.manual_seed(0)
    with torch.no_grad():
        theirs = torch.stack([model.iw_bound(x, 20, chunk_size=7) for _ in range(20)]).mean(0)
    assert abs(float(ours.mean() - theirs.mean())) < 0.05


def test_memory_need_in_bf16_counts_the_wide_layers_kept_copies(monkeypatch):
    """An evaluation in bfloat16 also holds a bfloat16 copy (2 bytes a weight) of every wide
    layer's weights: the 784 x 400 layers here, not the smaller ones."""
    from aevb import linear

    model = bernoulli_vae(d=784, j=20, hidden=400).float()
    monkeypatch.setattr(linear, "WIDE_WEIGHTS", 784 * 400)
    wide = [m for m in model.modules() if isinstance(m, linear.Linear) and m.weight.numel() >= 784 * 400]
    assert len(wide) == 2
    fp32 = ev.memory_need(model, 1000, 10)
    assert ev.memory_need(model, 1000, 10, precision="bf16") - fp32 == 2 * 2 * 784 * 400


def test_default_sizes_respect_the_memory_budget():
    model = bernoulli_vae(d=784, j=20, hidden=400)
    width = ev.decoder_width(model)
    assert width == 784
    row_bytes = ev.TEMPORARIES * next(model.parameters()).element_size() * width  # one sample's temporaries
    for k, budget in [(5000, 128_000_000), (1, 128_000_000), (50, 16_000_000), (10 ** 6, 1_600_000)]:
        bs, chunk = ev.default_sizes(model, 10000, k, budget=budget)
        assert 1 <= chunk <= k and 1 <= bs <= 10000
        assert bs * chunk * row_bytes <= max(budget, row_bytes)
        assert ev.memory_need(model, 10000, k, budget=budget) == bs * chunk * row_bytes
    # a larger budget allows more memory, but a chunk stays at the fastest size on a CPU (16 MB)
    assert ev.default_sizes(model, 10000, 5000, batch_size=100, budget=256_000_000) == (100, 6)  # float64


def test_a_model_bound_by_reading_its_weights_gets_batches_of_64_rows_within_the_budget():
    """An evaluation batch reads every weight once: where 64 rows' temporaries are smaller than the
    weights, a batch takes 64 rows instead of the 16 MB rule's few, unless a budget forbids it;
    the bound of each datapoint does not depend on the batch it was in."""
    d = 32_000  # 512,000 bytes of temporaries a row: 31 rows in 16 MB
    small, big = (bernoulli_vae(d=d, j=4, hidden=h, dtype=torch.float32) for h in (16, 160))
    per_row = ev.TEMPORARIES * 4 * d
    assert ev.weight_bytes(big) > ev.WEIGHT_BOUND_ROWS * per_row > ev.weight_bytes(small)
    assert ev.eval_rows(small) == ev.DEFAULT_BUDGET // per_row == 31  # weights small: the 16 MB rule
    assert ev.eval_rows(big) == ev.WEIGHT_BOUND_ROWS == 64
    assert ev.eval_rows(big, budget=8_000_000) == 15  # the user's budget holds
    assert ev.eval_rows(big, budget=100_000_000) == 64
    assert ev.default_sizes(big, 1000, 1) == (64, 1) and ev.default_sizes(big, 1000, 4) == (16, 4)
    x = (torch.rand(70, d, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    floor = evaluate_bounds(big, x, k=2, seed=3)
    rule = evaluate_bounds(big, x, k=2, seed=3, batch_size=31)
    assert torch.allclose(floor.lk, rule.lk, rtol=1e-6, atol=1e-3) and torch.allclose(floor.elbo, rule.elbo, atol=1e-3)


# ----------------------------------------------------------------------------- bits/dim, diagnostics
def test_bits_per_dim_from_nats():
    assert bits_per_dim(-784 * LN2, 784) == pytest.approx(1.0)
    assert bits_per_dim(-100.0, 784) == pytest.approx(100.0 / (784 * LN2))
    assert bits_per_dim(-100.0, 784, 8.0) == pytest.approx(100.0 / (784 * LN2) + 8.0)
    off, _ = bpd_convention("binary", 2, "bernoulli")
    assert off == 0.0
    off, text = bpd_convention("unit", 256, "gaussian")
    assert off == pytest.approx(math.log2(255)) and "256" in text
    # the uniform density on [0, 1] (log p = 0) is the uniform distribution over the 255 bins
    assert bits_per_dim(0.0, 10, off) == pytest.approx(math.log2(255))
    assert bpd_convention("unit", 256, "bernoulli")[0] is None
    assert bpd_convention("real", None, "gaussian")[0] is None


def test_a_fair_coin_model_has_one_bit_per_dimension():
    d, j = 16, 3
    model = bernoulli_vae(d=d, j=j)
    with torch.no_grad():  # q = p(z) and p(x|z) = Bernoulli(1/2): every weight is 2^-D
        for lin in (model.encoder.net[-1], model.decoder.net[-1]):
            lin.weight.zero_()
            lin.bias.zero_()
    x = binary_data(n=50, d=d)
    b = evaluate_bounds(model, x, k=30)
    assert torch.allclose(b.lk, torch.full((50,), -d * LN2, dtype=torch.float64), atol=1e-9)
    summary = summarize(b, d, "binary", 2, "bernoulli")
    assert summary["bits_per_dim"]["lk"] == pytest.approx(1.0)
    assert summary["bits_per_dim"]["elbo"] == pytest.approx(1.0)
    assert summary["active_units"] == 0 and summary["kl_per_dim"] == [0.0] * j


def test_active_units_and_kl_per_dimension():
    j = 6
    model = bernoulli_vae(j=j)
    dead = [1, 3, 4]
    with torch.no_grad():
        last = model.encoder.net[-1]
        for jj in dead:  # mean and log-variance outputs zeroed: q(z_j|x) = N(0, 1) for every x
            for row in (jj, j + jj):
                last.weight[row].zero_()
                last.bias[row] = 0.0
        for jj in set(range(j)) - set(dead):
            last.weight[jj].mul_(5.0)  # clearly active: mean varies with x
    x = binary_data(n=300)
    assert int(active_mask(active_unit_variances(posterior_means(model, x))).sum()) == j - len(dead)
    kl = kl_per_dimension(model, x)
    assert kl.shape == (j,)
    assert torch.all(kl[dead] == 0) and torch.all(kl[[0, 2, 5]] > 0.01)
    b = evaluate_bounds(model, x, k=3)
    assert torch.allclose(b.kl_per_dim.mean(0), kl) and torch.allclose(b.kl, b.kl_per_dim.sum(-1))
    s = summarize(b, x.shape[1], "binary", 2, "bernoulli")
    assert s["active_units"] == 3
    # the threshold: Var_x E_q[z_j] > 0.01
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(20000, 3, generator=g, dtype=torch.float64) * torch.tensor([0.05, 0.2, 0.0], dtype=torch.float64)
    assert int(active_mask(active_unit_variances(mu)).sum()) == 1  # variances 0.0025, 0.04, 0
    assert int(active_mask(active_unit_variances(mu), threshold=0.001).sum()) == 2
    assert ACTIVE_UNIT_THRESHOLD == 0.01


def test_dynamically_binarized_split_is_binarized_once_with_a_fixed_seed():
    g = torch.Generator().manual_seed(0)
    split = Split(torch.rand(50, 4, generator=g))
    ds = Dataset("toy", train=split, test=split, image_shape=(1, 2, 2), kind="unit", levels=256,
                 dynamic_binarization=True)
    x1, _, kind, levels, note = split_data(None, "test", 7, data=ds)
    x2, *_ = split_data(None, "test", 7, data=ds)
    x3, *_ = split_data(None, "test", 8, data=ds)
    x1, x2, x3 = (x.materialize() for x in (x1, x2, x3))
    assert set(x1.unique().tolist()) == {0.0, 1.0} and torch.equal(x1, x2) and not torch.equal(x1, x3)
    assert (kind, levels) == ("binary", 2) and "seed 7" in note
    static = Dataset("toy", train=split, test=split, image_shape=(1, 2, 2), kind="unit", levels=256)
    xs, _, kind, levels, note = split_data(None, "test", 7, data=static)
    assert torch.equal(xs.materialize(), split.materialize()) and note is None and kind == "unit"


# ----------------------------------------------------------------------------- `aevb evaluate`
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("evalrun") / "run"
    cfg = tiny_config(train={"epochs": 1, "images_every": 0}, model={"latent_dim": 4, "encoder_hidden": [32]})
    Trainer.new(cfg, out).fit()
    return out


def test_evaluate_command_writes_json_and_per_datapoint_rows(tiny_run, tmp_path, capsys):
    csv_path = tmp_path / "rows.csv"
    assert main(["evaluate", str(tiny_run), "--k", "20", "--per-datapoint", str(csv_path), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "L_20" in printed and "active units" in printed
    r = json.loads((tiny_run / "evaluation-k20.json").read_text())
    for key in ("elbo", "lk", "kl_per_dim", "active_units", "bits_per_dim", "bits_per_dim_convention",
                "n", "dim", "k", "split", "seed", "binarization", "loss"):
        assert key in r
    assert r["split"] == "test" and r["k"] == 20 and r["n"] == 359 and r["dim"] == 64
    assert len(r["kl_per_dim"]) == 4 and 0 <= r["active_units"] <= 4
    assert r["elbo"]["mean"] == pytest.approx(r["elbo"]["log_px_given_z"] - r["elbo"]["kl"])
    assert r["lk"]["mean"] > r["elbo"]["mean"] and r["lk"]["se"] > 0
    assert sum(r["kl_per_dim"]) == pytest.approx(r["elbo"]["kl"])
    assert r["bits_per_dim"] is None  # Bernoulli on 17 grey levels: not a distribution over them
    rows = np.genfromtxt(csv_path, delimiter=",", names=True)
    assert len(rows) == 359 and np.all(np.isfinite(rows["lk"])) and np.all(np.isfinite(rows["elbo"]))
    assert list(rows["index"]) == list(range(359))
    assert rows["lk"].mean() == pytest.approx(r["lk"]["mean"], abs=1e-9)
    assert rows["elbo"].mean() == pytest.approx(r["elbo"]["mean"], abs=1e-9)
    assert set(np.unique(rows["label"]).astype(int)) <= set(range(10))

    npy_path = tmp_path / "rows.npy"
    out_json = tmp_path / "e.json"
    assert main(["evaluate", str(tiny_run), "--k", "20", "--per-datapoint", str(npy_path), "--out", str(out_json),
                 "--no-progress", "--chunk", "3", "--batch-size", "50"]) == 0
    arr = np.load(npy_path)
    r2 = json.loads(out_json.read_text())
    assert len(arr) == 359 and arr["lk"].mean() == pytest.approx(r2["lk"]["mean"], abs=1e-9)
    assert r2["chunk"] == 3 and r2["batch_size"] == 50
    # the same seed and batch size give the same samples whatever the chunk: equal to float precision
    assert main(["evaluate", str(tiny_run), "--k", "20", "--out", str(tmp_path / "f.json"), "--no-progress",
                 "--batch-size", "50"]) == 0
    assert json.loads((tmp_path / "f.json").read_text())["lk"]["mean"] == pytest.approx(r2["lk"]["mean"], abs=1e-4)


def test_evaluate_without_k_reports_the_elbo(tiny_run, capsys):
    assert main(["evaluate", str(tiny_run), "--no-progress"]) == 0
    r = json.loads((tiny_run / "evaluation.json").read_text())
    assert r["k"] == 1 and math.isfinite(r["elbo"]["mean"]) and r["elbo"]["kl"] > 0
    assert "L_1 " not in capsys.readouterr().out
    # the 1-sample ELBO agrees with the trainer's logged test bound within Monte Carlo error
    logged = json.loads((tiny_run / "metrics.jsonl").read_text().splitlines()[-1])[M.TEST_BOUND]
    assert abs(r["elbo"]["mean"] - logged) < 5 * r["elbo"]["se"]
    assert main(["evaluate", str(tiny_run), "--split", "train", "--no-progress"]) == 0
    assert json.loads((tiny_run / "evaluation-train.json").read_text())["n"] == 1438


@pytest.mark.parametrize("wide", [False, True])
def test_bf16_evaluation_is_close_to_float32_and_says_so(tiny_run, tmp_path, monkeypatch, wide):
    """--precision bf16 runs the networks in bfloat16 (the numbers move by bfloat16's rounding,
    not more: the bound is still summed in float32), through autocast or, for wide layers, their
    kept bfloat16 copies; the JSON says which precision it used."""
    from aevb import linear

    if wide:
        monkeypatch.setattr(linear, "WIDE_WEIGHTS", 1)  # every layer takes the kept-copy path
    got = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.json"
        assert main(["evaluate", str(tiny_run), "--k", "10", "--precision", precision, "--out", str(out),
                     "--no-progress"]) == 0
        got[precision] = json.loads(out.read_text())
        assert got[precision]["precision"] == precision
    f, b = got["fp32"], got["bf16"]
    for key in ("elbo", "lk"):
        assert b[key]["mean"] != f[key]["mean"]  # bfloat16 was used
        assert b[key]["mean"] == pytest.approx(f[key]["mean"], rel=2e-3)


def test_bf16_scores_from_python_and_bad_precisions(tiny_run, tmp_path, capsys):
    from aevb import ConfigError
    from aevb.evaluate import evaluate_run
    from aevb.runs import Run

    x = torch.rand(40, 64)
    run = Run(tiny_run)
    f, b = run.score(x, k=5, compressor=None), run.score(x, k=5, compressor=None, precision="bf16")
    assert not np.array_equal(b["lk"], f["lk"])
    np.testing.assert_allclose(b["lk"], f["lk"], rtol=5e-3)
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16; got 'fp16'"):
        run.score(x, precision="fp16")
    with pytest.raises(ConfigError, match="precision"):
        evaluate_run(tiny_run, precision="bfloat16")
    out = tmp_path / "e.json"
    with pytest.raises(SystemExit) as e:  # the command line's own check of a choice
        main(["evaluate", str(tiny_run), "--precision", "bf17", "--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--precision" in err and "bf17" in err and "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("wide", [False, True])
def test_bf16_encode_reconstruct_decode_are_close_to_float32(tiny_run, tmp_path, monkeypatch, wide):
    """encode, reconstruct and decode with precision bf16 (Python and the command line) run the
    networks in bfloat16, through autocast or wide layers' kept copies: outputs float32 and moved
    by bfloat16's rounding only; a bad precision is refused before anything is written."""
    from PIL import Image

    from aevb import ConfigError, linear
    from aevb.runs import Run

    if wide:
        monkeypatch.setattr(linear, "WIDE_WEIGHTS", 1)
    x = torch.rand(30, 64)
    run = Run(tiny_run)
    f, b = run.encode(x), run.encode(x, precision="bf16")
    assert b["mu"].dtype == f["mu"].dtype and not np.array_equal(b["mu"], f["mu"])
    np.testing.assert_allclose(b["mu"], f["mu"], atol=0.05 * np.abs(f["mu"]).max())
    rf, rb = run.reconstruct(x), run.reconstruct(x, precision="bf16")
    assert rb.dtype == rf.dtype == torch.float32 and not torch.equal(rb, rf)
    assert (rb - rf).abs().max() < 0.03
    z = torch.as_tensor(f["mu"], dtype=torch.float32)
    df, db = run.decode(z), run.decode(z, precision="bf16")
    assert db.dtype == torch.float32 and not torch.equal(db, df) and (db - df).abs().max() < 0.03
    for call in (lambda: run.encode(x, precision="half"), lambda: run.reconstruct(x, precision=None),
                 lambda: run.decode(z, precision="bf17")):
        with pytest.raises(ConfigError, match="precision must be one of fp32, bf16"):
            call()
    # the commands: the same numbers as Python in each precision
    np.save(tmp_path / "x.npy", x.numpy())
    for precision in ("fp32", "bf16"):
        codes = tmp_path / f"codes-{precision}.npz"
        assert main(["encode", str(tiny_run), "--data", f"array:{tmp_path / 'x.npy'}", "--out", str(codes),
                     "--precision", precision, "--no-progress"]) == 0
        want = b if precision == "bf16" else f
        np.testing.assert_allclose(np.load(codes)["mu"], want["mu"], rtol=1e-6, atol=1e-9)
        pngs = tmp_path / f"rec-{precision}"
        assert main(["reconstruct", str(tiny_run), "--data", f"array:{tmp_path / 'x.npy'}", "--out", str(pngs),
                     "--precision", precision, "--no-progress"]) == 0
        decoded = tmp_path / f"dec-{precision}"
        assert main(["decode", str(tiny_run), "--z", str(codes), "--out", str(decoded), "--precision", precision]) == 0
        assert len(list(pngs.glob("*.png"))) == len(list(decoded.glob("*.png"))) == 30
    first = [np.asarray(Image.open(sorted((tmp_path / f"dec-{p}").glob("*.png"))[0]), dtype=int) for p in ("fp32", "bf16")]
    assert np.abs(first[0] - first[1]).max() <= 8
    grid = tmp_path / "grid.png"
    assert main(["reconstruct", str(tiny_run), "--precision", "bf16", "--out", str(grid)]) == 0 and grid.is_file()


def test_evaluate_errors(tiny_run, tmp_path, capsys):
    assert main(["evaluate", str(tmp_path), "--k", "5"]) == 2
    assert "not an aevb run" in capsys.readouterr().err
    assert main(["evaluate", str(tiny_run), "--k", "0"]) == 2
    err = capsys.readouterr().err
    assert "--k" in err and "positive" in err and "Traceback" not in err
    assert main(["evaluate", str(tiny_run), "--split", "valid"]) == 2
    assert "valid" in capsys.readouterr().err
    assert main(["evaluate", str(tiny_run), "--per-datapoint", str(tmp_path / "rows.txt")]) == 2
    assert ".csv or .npy" in capsys.readouterr().err


def test_interrupted_evaluation_leaves_no_file(tiny_run, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = ev.chunk_log_weights

    def interrupt(*a, **kw):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(ev, "chunk_log_weights", interrupt)
    out, rows = tmp_path / "ev.json", tmp_path / "rows.csv"
    code = main(["evaluate", str(tiny_run), "--k", "50", "--chunk", "5", "--out", str(out),
                 "--per-datapoint", str(rows), "--no-progress"])
    assert code == 130
    assert not out.exists() and not rows.exists() and list(tmp_path.iterdir()) == []


def test_evaluate_limit_takes_the_first_datapoints_and_says_so(tiny_run, tmp_path, capsys):
    full = tmp_path / "full.json"
    assert main(["evaluate", str(tiny_run), "--k", "5", "--batch-size", "7", "--no-progress", "--out", str(full),
                 "--per-datapoint", str(tmp_path / "rows.csv")]) == 0
    assert main(["evaluate", str(tiny_run), "--k", "5", "--batch-size", "7", "--limit", "7", "--no-progress"]) == 0
    out = capsys.readouterr().out
    limited = json.loads((tiny_run / "evaluation-k5-first7.json").read_text())
    whole = json.loads(full.read_text())
    assert limited["n"] == 7 and limited["split_datapoints"] == whole["n"] and "(the first, of" in out
    rows = np.genfromtxt(tmp_path / "rows.csv", delimiter=",", names=True)
    # the same seed and batch size give the first 7 datapoints the same samples as the full evaluation
    assert limited["lk"]["mean"] == pytest.approx(float(rows["lk"][:7].mean()), abs=1e-9)
    assert main(["evaluate", str(tiny_run), "--limit", "0"]) == 2


def test_the_written_result_reads_back_through_the_schema(tiny_run, tmp_path):
    """What `aevb evaluate` writes is what the report and explorer read: read_evaluation accepts
    it, headline shows its L_k and bits, and a file of another format or a newer version is refused."""
    from aevb.errors import RunError
    from aevb.evaluate import EVALUATION_VERSION, headline, read_evaluation, run_evaluations

    out = tmp_path / "evaluation-k7.json"
    assert main(["evaluate", str(tiny_run), "--k", "7", "--out", str(out), "--no-progress"]) == 0
    d = read_evaluation(out)
    assert d["version"] == EVALUATION_VERSION and d["k"] == 7
    rows = {label: value for label, value, _ in headline(d)}
    assert rows["L_7 (importance-weighted bound)"] == d["lk"]["mean"]
    assert rows["test ELBO"] == d["elbo"]["mean"] <= d["lk"]["mean"] + 4 * d["lk"]["se"]
    assert any(label.startswith("active units (Var_x E_q[z_j]") for label in rows)
    for change, why in [({"format": "something-else"}, "not an aevb evaluation"),
                        ({"version": EVALUATION_VERSION + 1}, "upgrade aevb")]:
        bad = tmp_path / "evaluation-bad.json"
        bad.write_text(json.dumps({**d, **change}))
        with pytest.raises(RunError, match=why):
            read_evaluation(bad)
    listed = {p.name: err for p, _, err in run_evaluations(tmp_path)}
    assert listed["evaluation-k7.json"] is None and "upgrade aevb" in listed["evaluation-bad.json"]
