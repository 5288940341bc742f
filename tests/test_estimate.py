"""The memory estimate counts the parameters of the model aevb builds, exactly, and reads the
data's shape from settings and file headers alone."""
import numpy as np
import pytest
import torch

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


def test_on_a_gpu_the_model_is_compared_with_the_gpu_and_the_host_side_with_the_ram():
    """The decision takes the memory as given (no GPU needed here): on CUDA the model's needs go
    against the device's memory, and the data held in memory with the checkpoint's copy against
    the RAM; on the CPU everything goes against the RAM."""
    from aevb.training.estimate import Memory, checkpoint_bytes, refusal
    from aevb.units import format_bytes

    cfg = merge(tiny_config(), {"model": {"encoder_hidden": [20_000]}})
    shape = (1, 28, 28)
    est = estimate(cfg, shape)
    need = est.total
    small_gpu = Memory("cuda:0", need // 2, 4 * need, "Small GPU")
    ram = need * 9 // 10  # less than the model needs, more than a checkpoint's copy of it
    assert checkpoint_bytes(est) < ram < need
    big_gpu = Memory("cuda:1", 4 * need, ram, "Big GPU")  # more GPU memory than RAM
    cpu = Memory("cpu", ram, ram)
    why = refusal(cfg, est, shape, "mnist", small_gpu)
    assert why.startswith(f"this run needs at least {format_bytes(need)} of GPU memory but cuda:0 (Small GPU) "
                          f"has {format_bytes(need // 2)}: the model on mnist"), why
    assert refusal(cfg, est, shape, "mnist", big_gpu) is None  # RAM smaller than the model: no matter
    assert "needs at least" in refusal(cfg, est, shape, "mnist", cpu)  # the same RAM refuses a CPU run
    # on the GPU the host still holds the data in memory and a checkpoint's copy of the model
    why = refusal(cfg, est, shape, "mnist", big_gpu, data_bytes=need)
    assert "of RAM beside the GPU's memory" in why and "lower --memory-budget" in why, why
    assert refusal(cfg, est, shape, "mnist", big_gpu, data_bytes=ram - checkpoint_bytes(est)) is None
    # on the CPU the data held in memory add to the model's needs
    roomy = Memory("cpu", 2 * need, 2 * need)
    assert refusal(cfg, est, shape, "mnist", roomy) is None
    assert "the data held in memory take" in refusal(cfg, est, shape, "mnist", roomy, data_bytes=need + 1)


def test_the_memory_of_a_cuda_device_comes_from_the_driver(monkeypatch):
    """What memory_of asks torch.cuda for (faked here: this machine has no GPU), and that a
    --device cuda run is checked against that device's memory, not the RAM."""
    import types

    import torch

    from aevb.data.cache import physical_memory
    from aevb.training import estimate as est_mod

    asked = []

    def props(index):
        asked.append(index)
        return types.SimpleNamespace(total_memory=(index + 1) * 10 ** 9, name=f"GPU {index}")

    monkeypatch.setattr(torch.cuda, "get_device_properties", props)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)  # as torchrun's set_device leaves it
    m = est_mod.memory_of(torch.device("cuda"))
    assert (m.device, m.device_bytes, m.device_name, m.separate) == ("cuda:2", 3 * 10 ** 9, "GPU 2", True)
    assert m.host_bytes == physical_memory()
    assert est_mod.memory_of(torch.device("cuda:0")).device_bytes == 10 ** 9 and asked == [2, 0]
    cpu = est_mod.memory_of(torch.device("cpu"))
    assert (cpu.device_bytes, cpu.host_bytes, cpu.separate) == (physical_memory(), physical_memory(), False)
    # check_memory resolves --device and uses that device's memory: 1 GB here, far below the RAM
    monkeypatch.setattr(est_mod, "resolve_device", lambda name: torch.device(name))
    cfg = merge(tiny_config(train={"device": "cuda:0"}), {"model": {"encoder_hidden": [100_000]}})
    assert est_mod.estimate(cfg, (1, 28, 28)).total < physical_memory()
    with pytest.raises(ValueError, match=r"GB of GPU memory but cuda:0 \(GPU 0\) has 1.0 GB"):
        check_memory(cfg, (1, 28, 28))
    assert check_memory(tiny_config(train={"device": "cuda:0"}), (1, 8, 8)).total < 10 ** 9


@pytest.mark.parametrize("pass_s, passes", [(0.15, 1), (0.0, 2)])
def test_the_time_estimate_runs_its_probe_twice_only_when_a_pass_is_short(monkeypatch, pass_s, passes):
    """A long probe pass is timed as it is (a second would cost as much again on a large model);
    a short one is run again after a warm-up. The estimate scales the timed pass to n x k."""
    import time as time_mod

    from aevb import bounds

    calls = []

    def fake_pass(model, probe, **kw):
        calls.append(len(probe))
        time_mod.sleep(pass_s)

    monkeypatch.setattr(bounds, "evaluate_bounds", fake_pass)
    model = torch.nn.Linear(3, 3)
    monkeypatch.setattr(bounds, "budget_rows", lambda model, budget=None: 64)
    seconds = bounds.estimate_seconds(model, torch.zeros(640, 3), k=1)
    assert calls == [64] * passes
    if passes == 1:
        assert 10 * pass_s <= seconds < 10 * (pass_s + 0.1)  # 640 rows = 10 probes of 64
