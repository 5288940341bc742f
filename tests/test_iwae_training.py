"""Training with the IWAE objective logs the bound L_k itself, and a KL-weighted (beta / warm-up)
ELBO run logs the unweighted ELBO: checked against an independent recomputation on a frozen model."""
import json
import math

import pytest
import torch

from aevb.cli import main
from aevb.bounds import evaluate_bounds
from aevb.training import Trainer
from aevb.training.objective import kl_weight, objective_terms

from conftest import tiny_config
from aevb import metrics as M


pytestmark = pytest.mark.usefixtures("one_thread")


def frozen_config(**objective):
    """One epoch of SGD with a learning rate so small that no parameter changes: the logged train
    bound is then an average of the objective of one fixed model over the training set."""
    return tiny_config(objective=objective, optim={"optimizer": "sgd", "lr": 1e-30},
                       model={"latent_dim": 4, "encoder_hidden": [32], "init_std": 0.3,
                              "center_inputs": False},  # N(0, 0.3^2) weights on inputs as they are
                       train={"epochs": 1, "images_every": 0, "batch_size": 100})


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_logged_iwae_train_bound_is_the_importance_weighted_bound(tmp_path):
    k = 20
    trainer = Trainer.new(frozen_config(objective="iwae", k=k), tmp_path / "run")
    before = _state(trainer.model)
    record = trainer.fit()[0]
    assert all(torch.equal(v, trainer.model.state_dict()[n]) for n, v in before.items())  # really frozen
    x = trainer.splits["train"]
    a = evaluate_bounds(trainer.model, x, k=k, seed=1)
    b = evaluate_bounds(trainer.model, x, k=k, seed=2)
    # MC error of a mean of one L_k draw per datapoint: the spread of two independent draws
    se = float((a.lk - b.lk).std() / math.sqrt(2 * len(x)))
    expected = float(a.lk.mean())
    assert abs(record[M.TRAIN_BOUND] - expected) < 4 * se + 1e-3, (record[M.TRAIN_BOUND], expected, se)
    # ... and it is not a surrogate: the ELBO (L_1) of the same model is clearly lower
    elbo = float(evaluate_bounds(trainer.model, x, k=200, seed=3).elbo.mean())
    assert expected - elbo > 20 * se and expected - elbo > 0.3
    assert record[M.TRAIN_BOUND] - elbo > 0.3
    # the logged reconstruction and KL are the ELBO's terms over the same samples
    assert record[M.TRAIN_LOG_PX_GIVEN_Z] - record[M.TRAIN_KL] == pytest.approx(elbo, abs=10 * se + 0.05)
    assert record["beta"] == 1.0


def test_iwae_objective_is_l_k_of_the_samples_drawn():
    """objective_terms(iwae).bound = log mean_i w_i for the same samples, per datapoint."""
    trainer_cfg = frozen_config(objective="iwae", k=7)
    from aevb.model import VAE

    torch.manual_seed(0)
    model = VAE.from_config(trainer_cfg.model, 64).double()
    x = (torch.rand(10, 64, dtype=torch.float64) < 0.3).double()
    torch.manual_seed(5)
    terms = objective_terms(model, x, trainer_cfg.objective)
    torch.manual_seed(5)
    log_w = model.log_importance_weights(x, 7)
    assert torch.allclose(terms.bound, torch.logsumexp(log_w, 0) - math.log(7), atol=1e-12)
    assert torch.all(terms.bound > log_w.mean(0))  # Jensen, per datapoint, for the same samples


def test_kl_weighted_training_logs_the_unweighted_elbo(tmp_path):
    cfg = frozen_config(objective="elbo", beta=0.5, warmup_epochs=2)
    trainer = Trainer.new(cfg, tmp_path / "run")
    record = trainer.fit()[0]
    # the logged bound is E_q log p(x|z) - KL, not E_q log p(x|z) - beta * KL
    assert record[M.TRAIN_BOUND] == pytest.approx(record[M.TRAIN_LOG_PX_GIVEN_Z] - record[M.TRAIN_KL], abs=1e-4)
    assert record["beta"] == pytest.approx(kl_weight(cfg.objective, 0.0)) and record["beta"] < 0.5
    x = trainer.splits["train"]
    ref = evaluate_bounds(trainer.model, x, k=1, seed=1).elbo
    se = float(ref.std() / math.sqrt(len(x)))
    assert abs(record[M.TRAIN_BOUND] - float(ref.mean())) < 4 * se
    # the weighted objective differs by (1 - beta) KL per datapoint: far outside the MC error
    assert (1 - 0.25) * record[M.TRAIN_KL] > 10 * se
    assert record[M.TEST_BOUND] == pytest.approx(record[M.TEST_LOG_PX_GIVEN_Z] - record[M.TEST_KL], abs=1e-4)


def test_train_command_with_iwae_objective(tmp_path):
    out = tmp_path / "iwae"
    code = main(["train", "--objective", "iwae", "--k", "5", "--epochs", "2", "--hidden", "32", "--latent-dim", "3",
                 "--out", str(out), "--no-progress", "--no-tensorboard", "--images-every", "0"])
    assert code == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(math.isfinite(r[M.TRAIN_BOUND]) for r in rows)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["objective"]["objective"] == "iwae" and cfg["objective"]["k"] == 5
    # a KL weight is refused for the iwae objective
    assert main(["train", "--objective", "iwae", "--beta", "0.5", "--out", str(tmp_path / "bad"),
                 "--no-progress"]) == 2
