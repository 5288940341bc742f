"""The trainer's extension points: a ready-made model and the callback hooks around the loop."""
import copy

import pytest
import torch

from aevb.config import ConfigError
from aevb.model import VAE
from aevb.training import Trainer

from conftest import tiny_config


def _strip(history):
    return [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in history]


def test_a_ready_made_model_is_trained_in_place_of_the_configured_one(tmp_path):
    cfg = tiny_config(train={"epochs": 2, "seed": 3})
    built = Trainer.new(cfg, tmp_path / "built")
    built.fit()
    torch.manual_seed(11)  # an initialisation the trainer would not draw
    model = VAE.from_config(built.cfg.model, built.data.dim, built.data.image_shape)
    twin = copy.deepcopy(model)
    given = Trainer.new(cfg, tmp_path / "given", model=model)
    assert given.model is model
    # its weights are kept (not drawn again), and fit_to_data was applied as the config asks
    assert torch.equal(model.encoder.net[0].weight, twin.encoder.net[0].weight)
    assert torch.equal(model.input_shift, built.model.input_shift) and model.input_shift.abs().sum() > 0
    given.fit()
    again = Trainer.new(cfg, tmp_path / "again", model=twin)
    again.fit()
    # the same ready-made model trains value for value the same; another initialisation, another run
    assert _strip(given.history) == _strip(again.history)
    assert given.history[-1]["test_bound"] != built.history[-1]["test_bound"]
    # on resume, the ready-made model gets the checkpoint's state
    fresh = VAE.from_config(built.cfg.model, built.data.dim, built.data.image_shape)
    resumed = Trainer.resume(tmp_path / "given", model=fresh)
    assert resumed.model is fresh and resumed.epoch == 2
    for k, v in given.model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k


def test_a_model_that_is_not_a_module_is_refused_before_any_file(tmp_path):
    with pytest.raises(ConfigError, match=r"model= must be a torch.nn.Module .*got dict"):
        Trainer.new(tiny_config(), tmp_path / "run", model={})
    assert not (tmp_path / "run").exists()
