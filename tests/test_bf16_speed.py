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
