"""Baselines of the AEVB paper and related inference methods.

* :mod:`.hmc` -- Hybrid Monte Carlo, vectorised over chains, with step-size adaptation;
* :mod:`.wake_sleep` -- the wake-sleep algorithm for the same encoder/decoder;
* :mod:`.mcem` -- Monte Carlo EM with HMC posterior samples;
* :mod:`.marginal_likelihood` -- the Appendix-D marginal-likelihood estimator;
* :mod:`.mean_field` -- per-datapoint (mean-field) inference and the amortization gap.
"""
from .hmc import HMCResult, HMCState, hmc_sample, hmc_step, posterior_log_prob
from .marginal_likelihood import (MarginalLikelihood, appendix_d_estimate, fit_gaussian, iw_log_px,
                                  linear_gaussian_log_px, model_log_px)
from .mcem import MCEM
from .mean_field import amortization_gap, elbo_given_q, evaluate_elbo, fit_mean_field
from .wake_sleep import WakeSleep, dream, sleep_objective, wake_objective

__all__ = ["HMCResult", "HMCState", "hmc_sample", "hmc_step", "posterior_log_prob", "MarginalLikelihood",
           "appendix_d_estimate", "fit_gaussian", "iw_log_px", "linear_gaussian_log_px", "model_log_px",
           "MCEM", "amortization_gap", "elbo_given_q", "evaluate_elbo", "fit_mean_field", "WakeSleep",
           "dream", "sleep_objective", "wake_objective"]
