"""The first bfloat16 pass of a process on a CPU whose bfloat16 products are slower than its
float32 ones warns once (aevb.devices.bf16_speed, warn_if_bf16_is_slow)."""
import math

import pytest
import torch

from aevb import devices
from conftest import tiny_config

CPU = torch.device("cpu")


@pytest.mark.parametrize("speed, warned", [(0.55, True), (0.95, False), (1.9, False)])
def test_a_slow_bf16_cpu_is_named_once(monkeypatch, capsys, speed, warned):
    monkeypatch.setattr(devices, "_bf16_looked_at", set())
    monkeypatch.setattr(devices, "_bf16_speed", {"cpu": speed})
    with devices.precision_context(CPU, "fp32"):  # float32 passes look at nothing
        pass
    assert capsys.readouterr().err == ""
    for _ in range(3):
        with devices.precision_context(CPU, "bf16"):
            pass
    err = capsys.readouterr().err
    if warned:
        assert err.count("\n") == 1 and f"run at {speed:.2f}x the speed of float32" in err
        assert "fp32 is the faster choice" in err
    else:
        assert err == ""


def test_training_in_bf16_on_a_slow_cpu_warns_before_its_first_step(monkeypatch, capsys, tmp_path, one_thread):
    from aevb.training import Trainer

    monkeypatch.setattr(devices, "_bf16_looked_at", set())
    monkeypatch.setattr(devices, "_bf16_speed", {"cpu": 0.5})
    Trainer.new(tiny_config(train={"epochs": 1, "precision": "bf16"}), tmp_path / "run").fit()
    assert capsys.readouterr().err.count("bfloat16 matrix products run at 0.50x") == 1


def test_the_speed_is_measured_once_per_process(monkeypatch, one_thread):
    monkeypatch.setattr(devices, "_bf16_speed", {})
    calls = []
    linear = torch.nn.functional.linear
    monkeypatch.setattr(torch.nn.functional, "linear", lambda a, b: calls.append(a.dtype) or linear(a, b))
    speed = devices.bf16_speed(CPU, size=64, rows=8)
    assert math.isfinite(speed) and speed > 0
    assert calls.count(torch.float32) == calls.count(torch.bfloat16) == 6
    assert devices.bf16_speed(CPU) == speed and len(calls) == 12


def test_the_measurement_leaves_the_global_random_stream_alone(monkeypatch, one_thread):
    """The model's noise comes from the global generator: a probe drawing from it would make a
    run's numbers depend on when in the process its first bfloat16 pass came."""
    monkeypatch.setattr(devices, "_bf16_speed", {})
    torch.manual_seed(5)
    want = torch.rand(4)
    torch.manual_seed(5)
    devices.bf16_speed(CPU, size=64, rows=8)
    assert torch.equal(torch.rand(4), want)


def test_a_bf16_run_resumed_in_a_new_process_equals_an_uninterrupted_one(monkeypatch, tmp_path, one_thread):
    """A resumed process measures the bfloat16 speed at its own first pass, in another epoch
    than the uninterrupted run did; the weights after both are the same."""
    from aevb.training import Trainer

    def fresh_process():
        monkeypatch.setattr(devices, "_bf16_looked_at", set())
        monkeypatch.setattr(devices, "_bf16_speed", {})

    cfg = lambda epochs: tiny_config(train={"epochs": epochs, "precision": "bf16"})
    fresh_process()
    Trainer.new(cfg(2), tmp_path / "full").fit()
    fresh_process()
    Trainer.new(cfg(1), tmp_path / "part").fit()
    fresh_process()
    Trainer.resume(tmp_path / "part", epochs=2).fit()
    a, b = (torch.load(tmp_path / r / "checkpoints" / "last.pt", weights_only=True)["model"] for r in ("full", "part"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
