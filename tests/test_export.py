"""`aevb export`: ONNX files give PyTorch's numbers in onnxruntime; safetensors load back into a
VAE; unfinished runs and folders that are not runs are refused."""
import json

import numpy as np
import pytest
import torch

from aevb.cli import main
from aevb.export import load_safetensors, safetensors_metadata
from aevb.io import CheckpointError
from aevb.runs import Run, write_marker
from aevb.training import Trainer

from conftest import tiny_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, one_thread):
    # a Gaussian decoder: two parameters per value, and a sigmoid mean to check the mean output
    out = tmp_path_factory.mktemp("export") / "run"
    cfg = tiny_config(model={"likelihood": "gaussian", "mean_activation": "sigmoid", "encoder_hidden": [16, 8],
                             "activation": "tanh"})
    Trainer.new(cfg, out).fit()
    return out


def test_onnx_files_match_pytorch(run_dir, capsys):
    ort = pytest.importorskip("onnxruntime")
    assert main(["export", str(run_dir), "--format", "onnx"]) == 0
    out = capsys.readouterr().out
    assert "encoder.onnx" in out and "decoder.onnx" in out
    run = Run(run_dir)
    model = run.load_model()
    x = run.load_data().test.rows(0, 37)
    enc = ort.InferenceSession(str(run_dir / "export" / "encoder.onnx"), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(run_dir / "export" / "decoder.onnx"), providers=["CPUExecutionProvider"])
    mu, log_var = enc.run(["mu", "log_var"], {"x": x.numpy()})
    with torch.no_grad():
        mu_t, log_var_t = model.encoder_params(x)
        z = mu_t + 0.7 * torch.randn(mu_t.shape, generator=torch.Generator().manual_seed(1))
        params_t = model.decoder_params(z)
        mean_t = model.likelihood.mean(params_t)
    np.testing.assert_allclose(mu, mu_t.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(log_var, log_var_t.numpy(), atol=1e-5, rtol=0)
    params, mean = dec.run(["params", "mean"], {"z": z.numpy()})
    assert params.shape == (37, 2 * 64) and mean.shape == (37, 64)
    np.testing.assert_allclose(params, params_t.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(mean, mean_t.numpy(), atol=1e-5, rtol=0)
    assert mean.min() > 0 and mean.max() < 1  # the sigmoid mean, not the raw parameters
    meta = {p.key: p.value for p in __import__("onnx").load(str(run_dir / "export" / "decoder.onnx")).metadata_props}
    assert meta["likelihood"] == "gaussian" and json.loads(meta["image_shape"]) == [1, 8, 8]
    assert json.loads(meta["aevb_config"])["model"]["mean_activation"] == "sigmoid"


def test_safetensors_load_back_into_a_vae(run_dir, tmp_path):
    assert main(["export", str(run_dir), "--format", "safetensors", "--out", str(tmp_path / "st")]) == 0
    path = tmp_path / "st" / "model.safetensors"
    import aevb

    loaded = aevb.load_safetensors(path)
    model = Run(run_dir).load_model()
    x = Run(run_dir).load_data().test.rows(0, 20)
    with torch.no_grad():
        for a, b in zip(model.encoder_params(x), loaded.encoder_params(x)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        z = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(model.likelihood.mean(model.decoder_params(z)), loaded.likelihood.mean(loaded.decoder_params(z)),
                                   atol=1e-5, rtol=0)
    meta = safetensors_metadata(path)
    assert meta["config"].model.likelihood == "gaussian" and meta["config"].model.encoder_hidden == [16, 8]
    assert meta["image_shape"] == (1, 8, 8) and meta["data_dim"] == 64
    assert not loaded.training


def test_a_file_that_is_not_an_aevb_safetensors_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="not one written by aevb"):
        load_safetensors(tmp_path / "other.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="could not be read"):
        load_safetensors(tmp_path / "bad.safetensors")


def test_unfinished_runs_and_non_runs_are_refused(run_dir, tmp_path, capsys):
    assert main(["export", str(tmp_path), "--format", "safetensors"]) == 2
    assert "not an aevb run folder" in capsys.readouterr().err
    write_marker(run_dir, "interrupted")
    try:
        assert main(["export", str(run_dir), "--format", "onnx", "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert "is not finished (status 'interrupted')" in err and "--resume" in err
        assert len(err.strip().splitlines()) == 1
        assert not (tmp_path / "x").exists()
    finally:
        write_marker(run_dir, "finished")
