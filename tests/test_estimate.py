"""The memory estimate counts the parameters of the model aevb builds, exactly, and reads the
data's shape from settings and file headers alone."""
import numpy as np
import pytest

from aevb.config import merge
from aevb.data import load_dataset
from aevb.model import VAE
from aevb.training.estimate import check_memory, estimate, shape_from_config

from conftest import tiny_config


@pytest.mark.parametrize("model,shape", [
    ({"encoder_hidden": [32, 16], "decoder_hidden": [8], "likelihood": "gaussian"}, (1, 8, 8)),
    ({"encoder_hidden": [20], "likelihood": "discretized-logistic", "components": 3}, (3, 5, 7)),
    ({"encoder_network": "conv", "decoder_network": "conv", "channels": [4, 6], "kernel_size": 3,
      "conv_norm": "group", "likelihood": "bernoulli"}, (1, 12, 10)),
    ({"encoder_network": "conv", "channels": [5], "kernel_size": 4, "likelihood": "gaussian"}, (3, 9, 9)),
    ({"decoder_network": "conv", "channels": [3, 4, 5], "likelihood": "gaussian"}, (1, 28, 20)),
])
def test_the_estimate_counts_exactly_the_parameters_of_the_model(model, shape):
    cfg = merge(tiny_config(), {"model": model})
    vae = VAE.from_config(cfg.model, int(np.prod(shape)), shape)
    est = estimate(cfg, shape)
    assert est.params == sum(p.numel() for p in vae.parameters())
    assert est.param_bytes == 16 * est.params  # weights, gradients, Adam's two moments in float32


def test_the_shape_is_known_before_loading(tmp_path):
    digits = load_dataset("digits")
    assert shape_from_config(tiny_config()) == tuple(digits.image_shape)
    np.save(tmp_path / "images.npy", np.zeros((5, 6, 7, 3), np.uint8))
    np.savez(tmp_path / "splits.npz", x_train=np.zeros((4, 10), np.float32), x_test=np.zeros((2, 10), np.float32))
    for name, want in [("images.npy", (3, 6, 7)), ("splits.npz", (1, 1, 10))]:
        cfg = tiny_config(data={"dataset": f"array:{tmp_path / name}"})
        assert shape_from_config(cfg) == want == tuple(load_dataset(cfg.data.dataset).image_shape)
    assert shape_from_config(tiny_config(data={"dataset": f"folder:{tmp_path}"})) is None  # the images say
    pics = tiny_config(data={"dataset": f"folder:{tmp_path}", "image_size": [16, 12], "color": "rgb"})
    assert shape_from_config(pics) == (3, 16, 12)
    assert shape_from_config(tiny_config(data={"dataset": f"array:{tmp_path / 'missing.npy'}"})) is None


def test_a_run_that_fits_passes_and_one_that_does_not_names_the_numbers(monkeypatch):
    monkeypatch.setattr("aevb.data.cache.physical_memory", lambda: 10 ** 9)
    assert check_memory(tiny_config(), (1, 8, 8)).total < 10 ** 7
    with pytest.raises(ValueError, match=r"needs at least .* GB of memory but the machine has 1.0 GB: .* lower --hidden"):
        check_memory(merge(tiny_config(), {"model": {"encoder_hidden": [100_000]}}), (1, 28, 28))
