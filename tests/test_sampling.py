"""The one way to draw from a model and to reconstruct data (aevb.sampling), and the
commands and per-epoch grids that use it: seeded on the CPU, so the same seed gives the same
pictures; checked against the model's own decoder and torch's generator."""
import pytest
import torch

from aevb.cli import main
from aevb.config import ModelConfig
from aevb.data import load_dataset
from aevb import sampling
from aevb.images import save_grid
from aevb.model import VAE
from aevb.runs import Run
from aevb.training import Trainer

from conftest import tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_thread):
    """Digits, 2 latents, 3 epochs; sample and reconstruction grids written every epoch."""
    out = tmp_path_factory.mktemp("sampling") / "run"
    Trainer.new(tiny_config(model={"latent_dim": 2}, train={"epochs": 3}), out).fit()
    return Run(out)


def small_vae(d, j=3, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(latent_dim=j, encoder_hidden=[16], likelihood="bernoulli", activation="tanh", init_std=0.3)
    return VAE.from_config(cfg, d).eval()


def seeded_normals(n, j, seed):
    return torch.randn(n, j, generator=torch.Generator().manual_seed(seed))


def test_prior_draws_are_torchs_seeded_normals_and_the_trainers_fixed_z(run, tmp_path):
    model = run.load_model()
    z = model.draw_prior(64, torch.Generator().manual_seed(7))
    assert z.dtype == torch.float32 and z.device.type == "cpu"
    torch.testing.assert_close(z, seeded_normals(64, 2, 7), rtol=0, atol=0)
    # the grids training writes every epoch: the decoded draws of seed + 2, and 8 test
    # images over their reconstructions (the last epoch's model is the run's checkpoint)
    x = load_dataset("digits").test.rows(0, 8)
    images = run.path / "images"
    z = seeded_normals(64, 2, run.config.train.seed + 2)
    save_grid(tmp_path / "want.png", sampling.decode_means(model, z), (1, 8, 8), 8)
    assert (images / "samples_epoch003.png").read_bytes() == (tmp_path / "want.png").read_bytes()
    save_grid(tmp_path / "want.png", sampling.paired_rows(x, sampling.reconstructions(model, x), 8), (1, 8, 8), 8)
    assert (images / "reconstructions_epoch003.png").read_bytes() == (tmp_path / "want.png").read_bytes()


def test_prior_samples_decode_the_seeded_draws_and_a_draw_is_seeded_too():
    model = small_vae(64, j=3).train()
    z, x = sampling.prior_samples(model, 500, seed=3)
    assert model.training  # the mode is restored
    torch.testing.assert_close(z, seeded_normals(500, 3, 3), rtol=0, atol=0)
    with torch.no_grad():
        mean = model.likelihood.mean(model.decoder_params(z))
    torch.testing.assert_close(x, mean)
    torch.testing.assert_close(sampling.decode_means(model, z, batch_size=7), mean)
    z2, d = sampling.prior_samples(model, 500, seed=3, draw=True, batch_size=128)
    torch.testing.assert_close(z2, z, rtol=0, atol=0)
    assert set(d.unique().tolist()) == {0.0, 1.0}  # Bernoulli draws around that mean
    assert abs(float(d.mean() - mean.mean())) < 0.02
    assert float(((d - mean) ** 2).mean()) == pytest.approx(float((mean * (1 - mean)).mean()), rel=0.05)
    torch.testing.assert_close(sampling.prior_samples(model, 500, seed=3, draw=True, batch_size=128)[1], d,
                               rtol=0, atol=0)
    assert not torch.equal(sampling.prior_samples(model, 500, seed=4, draw=True, batch_size=128)[1], d)


def test_reconstructions_are_the_decoder_mean_at_the_posterior_mean_and_rows_pair_up():
    model = small_vae(64, j=3)
    x = torch.rand(5, 64)
    with torch.no_grad():
        want = model.likelihood.mean(model.decoder_params(model.encoder_params(x)[0]))
    rec = sampling.reconstructions(model, x)
    torch.testing.assert_close(rec, want)
    tiles = sampling.paired_rows(x, rec, 3)
    blank = torch.zeros(64)
    expected = [x[0], x[1], x[2], rec[0], rec[1], rec[2], x[3], x[4], blank, rec[3], rec[4], blank]
    torch.testing.assert_close(tiles, torch.stack(expected), rtol=0, atol=0)
    torch.testing.assert_close(sampling.paired_rows(x[:2], rec[:2], 8), torch.cat([x[:2], rec[:2]]), rtol=0, atol=0)


def test_cli_sample_is_seeded_also_for_a_draw(run, tmp_path, capsys):
    def sample(name, *options):
        assert main(["sample", str(run.path), "-n", "16", "--out", str(tmp_path / name), *options]) == 0
        return (tmp_path / name).read_bytes()

    a, b, c = (sample("a.png", "--draw", "--seed", "3"), sample("b.png", "--draw", "--seed", "3"),
               sample("c.png", "--draw", "--seed", "4"))
    assert a == b and a != c
    # the PNG is the grid of prior_samples' draw for that seed; without --draw, of the means
    model = run.load_model()
    save_grid(tmp_path / "want.png", sampling.prior_samples(model, 16, seed=3, draw=True)[1], (1, 8, 8), 4)
    assert (tmp_path / "want.png").read_bytes() == a
    save_grid(tmp_path / "want.png", sampling.prior_samples(model, 16, seed=3)[1], (1, 8, 8), 4)
    assert sample("m.png", "--seed", "3") == (tmp_path / "want.png").read_bytes() != a


def test_cli_reconstruct_writes_originals_over_reconstructions(run, tmp_path):
    out = tmp_path / "r.png"
    assert main(["reconstruct", str(run.path), "-n", "5", "--ncol", "3", "--start", "10", "--out", str(out)]) == 0
    model = run.load_model()
    x = load_dataset("digits").test.rows(10, 15)
    save_grid(tmp_path / "want.png", sampling.paired_rows(x, sampling.reconstructions(model, x), 3), (1, 8, 8), 3)
    assert out.read_bytes() == (tmp_path / "want.png").read_bytes()
