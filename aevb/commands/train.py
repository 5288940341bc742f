"""`aevb train`: train a VAE into a run folder, or continue one with --resume."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import choices
from ..config.rules import sizes_chosen
from ..flows import FLOW_STEPS
from ..metrics import TEST_BOUND
from ..priors import MIXTURE_COMPONENTS, PSEUDO_INPUTS
from ..sizing import LOGISTIC_COMPONENTS
from ..units import count
from .common import add_parser

# (flag, dotted config key, argparse keywords). Every option defaults to "not given", so a config
# file and a preset are only overridden by what the user typed.
OPTIONS = [
    # data
    ("--dataset", "data.dataset", dict(metavar="NAME", help="digits (embedded, default), mnist, fashion-mnist, "
                                       "binarized-mnist, frey-face, omniglot, celeba, folder:PATH or array:PATH")),
    ("--data-dir", "data.data_dir", dict(metavar="DIR", help="folder holding the data set's files "
                                         "(default: $AEVB_DATA/<dataset> or ~/.cache/aevb/<dataset>)")),
    ("--no-download", "data.download", dict(action="store_false", help="never download; fail if files are missing")),
    ("--validation", "data.validation", dict(type=float, metavar="N", help="hold out N training points "
                                             "(or a fraction if N < 1) as a validation split")),
    ("--binarize", "data.binarize", dict(choices=choices("data.binarize"), help="static: one fixed Bernoulli draw "
                                         "per image; dynamic: a fresh draw every time an image is used "
                                         "(default: the data as they are)")),
    ("--image-size", "data.image_size", dict(type=int, nargs=2, metavar=("H", "W"), help="resize images "
                                             "(folder:, celeba)")),
    ("--crop", "data.crop", dict(type=int, nargs=2, metavar=("H", "W"), help="take the central H x W of each image "
                                 "before resizing (folder:, celeba; CelebA 64x64 convention: --crop 148 148 "
                                 "--image-size 64 64)")),
    ("--color", "data.color", dict(choices=choices("data.color"), help="folder images in grey or colour (default: auto)")),
    ("--classes", "data.classes", dict(type=int, nargs="+", metavar="LABEL", help="keep only the datapoints with "
                                       "these labels, in every split (e.g. train on digits 0-8 and score 9 as new data)")),
    ("--perturb", "data.perturb", dict(type=float, metavar="MU", help="train a background model: each training "
                                       "value is replaced, with probability MU (e.g. 0.2), by a random level, per "
                                       "batch (Ren et al. 2019; aevb score --background)")),
    ("--data-seed", "data.seed", dict(type=int, metavar="S", help="seed of held-out splits and static binarization")),
    ("--memory-budget", "data.memory_budget", dict(metavar="SIZE", help="data larger than this (e.g. 500MB, 8GB) "
                                                   "are streamed from an on-disk cache instead of held in memory "
                                                   "(default: a quarter of the machine's RAM)")),
    ("--cache-dir", "data.cache_dir", dict(metavar="DIR", help="where decoded images are cached (default: "
                                           "$AEVB_CACHE or ~/.cache/aevb/prepared)")),
    ("--skip-bad-images", "data.skip_bad_images", dict(action="store_true", help="leave out unreadable image "
                                                        "files, saying how many, instead of refusing")),
    # model
    ("--latent-dim", "model.latent_dim", dict(type=int, metavar="J", help="size of z (default: from the data's "
                                              "size, 20 for up to 2,048 values per datapoint)")),
    ("--hidden", "model.encoder_hidden", dict(type=int, nargs="+", metavar="H", help="encoder hidden sizes, "
                                              "e.g. --hidden 200 200 (the decoder mirrors them; default: from "
                                              "the data's size, 400 for up to 2,048 values per datapoint)")),
    ("--decoder-hidden", "model.decoder_hidden", dict(type=int, nargs="+", metavar="H", help="decoder hidden sizes "
                                                   "(default: the encoder's, reversed)")),
    ("--activation", "model.activation", dict(metavar="NAME", help=", ".join(choices("model.activation")))),
    ("--encoder-network", "model.encoder_network", dict(choices=choices("model.encoder_network"), help="q(z|x) network")),
    ("--decoder-network", "model.decoder_network", dict(choices=choices("model.decoder_network"), help="p(x|z) network")),
    ("--channels", "model.channels", dict(type=int, nargs="+", metavar="C", help="conv: channels of the "
                                          "stride-2 stages, each halving H and W (the decoder mirrors them; "
                                          "default: from the image size)")),
    ("--kernel-size", "model.kernel_size", dict(type=int, metavar="K", help="conv: kernel size")),
    ("--conv-norm", "model.conv_norm", dict(choices=choices("model.conv_norm"), help="conv: GroupNorm after each "
                                            "hidden convolution (per datapoint), or none")),
    ("--likelihood", "model.likelihood", dict(choices=choices("model.likelihood"),
                                              help="p(x|z) (default: bernoulli for data in [0,1], else gaussian); "
                                                   "discretized-logistic: a mass on each of 256 levels (8-bit data)")),
    ("--components", "model.components", dict(type=int, metavar="K", help="discretized-logistic: mixture "
                                               f"components per value (default: {LOGISTIC_COMPONENTS})")),
    ("--sigma", "model.sigma", dict(type=float, help="standard deviation of gaussian-fixed (1: squared error)")),
    ("--mean-activation", "model.mean_activation", dict(choices=choices("model.mean_activation"),
                                                        help="squash the gaussian decoder's mean")),
    ("--min-log-var", "model.min_log_var", dict(type=float, help="soft floor on the gaussian decoder's log-variance")),
    ("--init-std", "model.init_std", dict(type=float, help="initialise weights from N(0, std^2) "
                                          "(default: PyTorch's initialisation)")),
    ("--no-center-inputs", "model.center_inputs", dict(action="store_false", help="feed the encoder x as it is "
                                                       "(default: x minus the training data's mean, scaled as "
                                                       "--input-scale says)")),
    ("--input-scale", "model.input_scale", dict(choices=choices("model.input_scale"), help="divide the centred inputs "
                                                "by the training data's standard deviation s (std), by s only where "
                                                "s > 1 (shrink) or not at all (none); default: shrink for MLP "
                                                "encoders, std for conv ones")),
    ("--no-data-output-bias", "model.output_bias_from_data", dict(action="store_false", help="start the decoder's "
                                                                  "output bias at PyTorch's initialisation (default: "
                                                                  "at the training data's mean)")),
    ("--latent-dims", "model.latent_dims", dict(type=int, nargs="+", metavar="J", help="stacked stochastic layers, "
                                                "bottom to top, e.g. --latent-dims 100 50 (the IWAE paper's two-layer "
                                                "model); the decoder reads the bottom layer")),
    ("--latent-hidden", "model.latent_hidden", dict(type=int, nargs="+", metavar="H", help="deterministic layers "
                                                    "between two stochastic ones (default: two of twice the upper "
                                                    "layer's size)")),
    ("--inference", "model.inference", dict(choices=choices("model.inference"), help="stacked layers: bottom-up "
                                            "(IWAE: q(z2|z1) from the sample below) or top-down (ladder VAE: shares "
                                            "the generative path)")),
    ("--prior", "model.prior", dict(choices=choices("model.prior"), help="p(z): standard (N(0, I), the AEVB "
                                    "paper's), mog (a learned mixture of Gaussians) or vamp (the VampPrior: a "
                                    "mixture of the posteriors of learned pseudo-inputs)")),
    ("--prior-components", "model.prior_components", dict(type=int, metavar="K", help="--prior mog: mixture "
                                                          f"components (default: {MIXTURE_COMPONENTS})")),
    ("--pseudo-inputs", "model.pseudo_inputs", dict(type=int, metavar="K", help="--prior vamp: learned "
                                                    f"pseudo-inputs (default: {PSEUDO_INPUTS})")),
    ("--flow", "model.flow", dict(choices=choices("model.flow"), help="a normalising flow on top of the Gaussian "
                                  "posterior: planar (Rezende & Mohamed 2015) or iaf (inverse autoregressive, "
                                  "Kingma et al. 2016)")),
    ("--flow-steps", "model.flow_steps", dict(type=int, metavar="K", help="steps of the flow (default: "
                                              + ", ".join(f"{k} {v}" for k, v in FLOW_STEPS.items()) + ")")),
    # objective
    ("--objective", "objective.objective", dict(choices=choices("objective.objective"), help="training bound")),
    ("--kl", "objective.kl", dict(choices=choices("objective.kl"), help="KL in closed form or by Monte Carlo (default: "
                                  "closed form where it exists, Monte Carlo with a flow or a learned prior)")),
    ("--samples", "objective.samples", dict(type=int, metavar="L", help="samples of z per datapoint (elbo)")),
    ("--k", "objective.k", dict(type=int, help="importance samples (iwae objective)")),
    ("--beta", "objective.beta", dict(type=float, help="KL weight in the training loss (the logged bound is unweighted)")),
    ("--warmup-epochs", "objective.warmup_epochs", dict(type=float, help="ramp beta linearly from 0 over these epochs")),
    # optimisation
    ("--optimizer", "optim.optimizer", dict(choices=choices("optim.optimizer"))),
    ("--lr", "optim.lr", dict(type=float, help="learning rate")),
    ("--weight-decay", "optim.weight_decay", dict(type=float, help="L2 weight decay")),
    ("--momentum", "optim.momentum", dict(type=float, help="SGD momentum")),
    ("--schedule", "optim.schedule", dict(choices=choices("optim.schedule"),
                                          help="learning-rate schedule, stepped per epoch")),
    ("--step-epochs", "optim.step_epochs", dict(type=int, help="step schedule period in epochs")),
    ("--gamma", "optim.gamma", dict(type=float, help="step/exponential schedule factor")),
    ("--grad-clip", "optim.grad_clip", dict(type=float, help="clip the gradient norm")),
    ("--lr-warmup-steps", "optim.warmup_steps", dict(type=int, metavar="N", help="raise the learning rate "
                                                     "linearly from 0 over the first N steps")),
    ("--fan-in-scale", "optim.fan_in_scale", dict(type=int, metavar="N", help="weights with fan-in n > N learn at "
                                                  "lr * sqrt(N / n), so huge inputs cannot blow up the first steps "
                                                  "(0: off)")),
    ("--max-skipped-steps", "optim.max_skipped_steps", dict(type=int, metavar="N", help="leave out up to N steps "
                                                            "whose loss or gradient is NaN or infinite, then stop "
                                                            "(0: stop at the first)")),
    # loop
    ("--epochs", "train.epochs", dict(type=int, help="epochs (default: 100 on digits, 10 otherwise)")),
    ("--early-stop", "train.early_stop", dict(type=lambda text: _number(text), metavar="PATIENCE",
                                              help="stop when the validation bound has not improved for PATIENCE "
                                                   "epochs (needs --validation; checkpoints/best.pt keeps the best "
                                                   "epoch's model in every run with a validation split) "
                                                   "(default: no early stop)")),
    ("--batch-size", "train.batch_size", dict(type=int, help="default: from the data's size (128, or 64 for "
                                              "large images)")),
    ("--eval-batch-size", "train.eval_batch_size", dict(type=int, help="datapoints per test/validation batch "
                                                        "(default: as many as fit in 16 MB of temporaries, at most 1000, or 64 "
                                                        "for a model bound by reading its weights)")),
    ("--seed", "train.seed", dict(type=int, help="seed of initialisation, shuffling and noise")),
    ("--device", "train.device", dict(help="auto, cpu, cuda, cuda:N or mps")),
    ("--threads", "train.threads", dict(type=int, help="CPU threads for PyTorch (default: one for a model whose "
                                        "step is small work, where sharing each operation costs more than it "
                                        "saves; else PyTorch's choice)")),
    ("--precision", "train.precision", dict(choices=choices("train.precision"), help="bf16: training steps run the networks "
                                            "in bfloat16 autocast (faster on CPUs whose bfloat16 products outrun float32's, "
                                            "such as AMX or AMD's Zen 4, and on recent GPUs; slower elsewhere, which "
                                            "training says); the bounds and the epochs' test bound stay fp32")),
    ("--images-every", "train.images_every", dict(type=int, metavar="N", help="write image grids every N epochs (0: never)")),
    ("--no-progress", "train.progress", dict(action="store_false", help="no progress bars or epoch lines")),
    ("--no-tensorboard", "train.tensorboard", dict(action="store_false", help="do not write TensorBoard events")),
    ("--no-report", "train.report", dict(action="store_false", help="no figures or report.html at the end of "
                                         "training (aevb report RUN writes them later)")),
    ("--limit-batches", "train.limit_batches", dict(type=int, metavar="N", help="a quick debug run: train only the "
                                                    "first N batches of each epoch and evaluate at most N "
                                                    "batches (the run records it)")),
]


def register(sub) -> None:
    p = add_parser(sub, "train", "train a VAE into a run folder",
                   "Train a VAE and write a run folder (config, metrics, images, checkpoints, TensorBoard).\n"
                   "Settings are applied in order: defaults < --preset < --config FILE < options.\n\n"
                   "examples:\n"
                   "  aevb train                                   # digits, no download, < 1 minute\n"
                   "  aevb train --preset pytorch-example --dataset mnist --data-dir DIR\n"
                   "  aevb train --dataset binarized-mnist --latent-dim 50 --objective iwae --k 5\n"
                   "  aevb train --resume runs/mnist --epochs 20    # continue, exactly")
    p.formatter_class = argparse.RawDescriptionHelpFormatter  # defaults are written into the help below
    p.add_argument("--out", metavar="RUN", help="run folder to create (default: runs/<dataset>-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--resume", metavar="RUN", help="continue this run from its last checkpoint")
    p.add_argument("--background-of", metavar="RUN", help="train the background model of RUN for `aevb score "
                   f"--background`: RUN's settings on its data, with --perturb (default {BACKGROUND_PERTURB}); "
                   "other options change them (e.g. --epochs); default --out: RUN-background")
    p.add_argument("--preset", help="named settings: " + ", ".join(_preset_names()))
    p.add_argument("--config", metavar="FILE", help="YAML or JSON file with sections data, model, objective, optim, train")
    from ..training.loggers import LOGGERS

    p.add_argument("--logger", action="append", choices=sorted(LOGGERS), help="also log the config and every "
                   "epoch's metrics to Weights & Biases or MLflow (repeat for both; configured by their "
                   "environment variables, e.g. WANDB_PROJECT, WANDB_MODE=offline, MLFLOW_TRACKING_URI; "
                   "needs pip install \"aevb[wandb]\" or \"aevb[mlflow]\")")
    p.add_argument("--network", choices=choices("model.encoder_network"), default=argparse.SUPPRESS,
                   help="encoder and decoder network both (default: mlp); --encoder-network and "
                        "--decoder-network set one each")
    from ..config import RunConfig

    defaults = RunConfig()
    for flag, key, kw in OPTIONS:
        kw = dict(kw)
        if kw.get("action") is None and "choices" not in kw and "metavar" not in kw:
            kw["metavar"] = flag.lstrip("-").upper().replace("-", "_")
        sec, name = key.split(".")
        value = getattr(getattr(defaults, sec), name)
        if "default" not in kw.get("help", "") and kw.get("action") is None and value is not None:
            shown = " ".join(map(str, value)) if isinstance(value, list) else value
            kw["help"] = (kw.get("help", "") + f" (default: {shown})").strip()
        p.add_argument(flag, dest=key, default=argparse.SUPPRESS, **kw)
    p.set_defaults(func=run)


def _number(text: str):
    """A number as typed (2 an int, 2.5 a float), so that the setting's own check says what is wrong with it."""
    import argparse as _argparse

    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise _argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _preset_names():
    from ..presets import PRESETS

    return sorted(PRESETS)


def config_from_args(args: argparse.Namespace, base=None):
    """(config, given): the config built from defaults (or ``base``), preset, file and options, and
    the dotted names of the options the user typed."""
    from ..config import RunConfig, load_config_file, merge, validate
    from ..config import apply_preset

    cfg = base if base is not None else RunConfig()
    if args.preset:
        cfg = apply_preset(cfg, args.preset)
    if args.config:
        file_cfg = load_config_file(args.config)
        if file_cfg.get("preset") and not args.preset:
            cfg = merge(cfg, {"preset": file_cfg["preset"]}, source=str(args.config))  # checks the name
            cfg = apply_preset(cfg, file_cfg["preset"])
        cfg = merge(cfg, {k: v for k, v in file_cfg.items() if k != "preset"}, source=str(args.config),
                    where=lambda k: f"{args.config}, key {k}")
    updates, given = {}, []
    flags = {key: flag for flag, key, _ in OPTIONS}
    if hasattr(args, "network"):  # both networks; --encoder-network / --decoder-network override it
        updates["model"] = {"encoder_network": args.network, "decoder_network": args.network}
        given += ["model.encoder_network", "model.decoder_network"]
    for _, key, _ in OPTIONS:
        if hasattr(args, key):
            sec, name = key.split(".")
            value = getattr(args, key)
            if name == "validation" and float(value).is_integer() and value >= 1:
                value = int(value)  # a count; a fraction or 1.5 stays a float (and 1.5 is refused)
            updates.setdefault(sec, {})[name] = value
            given.append(key)
    cfg = merge(cfg, updates, source="command line", where=lambda k: f"option {flags[k]}")
    if not getattr(args, "resume", None):  # a resumed run's options are checked with its own settings (read_resume)
        validate(cfg)  # every setting and combination, before anything is loaded or written
    return cfg, given


def run(args: argparse.Namespace) -> int:
    from ..config import ConfigError
    from ..training import Trainer

    if args.resume:
        if args.out and Path(args.out).resolve() != Path(args.resume).resolve():
            raise ConfigError("--resume continues a run in its own folder; drop --out")
        if args.preset or args.config:
            raise ConfigError("--resume uses the run's saved config; drop --preset/--config")
        if args.overwrite:
            raise ConfigError("--overwrite replaces a run and --resume continues one; give only one of them")
    base = background_base(args) if args.background_of else None
    cfg, given = config_from_args(args, base)
    from ..training.loggers import build_loggers

    callbacks = build_loggers(args.logger)  # a missing tracker package: refused here
    if args.resume:
        trainer = Trainer.resume(args.resume, overrides=cfg, given=given, callbacks=callbacks)
        if not trainer.dist.is_main:  # under torchrun only rank 0 talks
            pass
        elif trainer.unfinished:
            done = "stopped early at epoch" if trainer.stopped_early else "has trained all"
            print(f"{trainer.run_dir} {done} {trainer.epoch}{'' if trainer.stopped_early else ' epochs'} but did not "
                  "finish; finishing it (figures, report, status)", file=sys.stderr)
        elif trainer.stopped_early:
            from ..training.session import stop_message

            since = trainer.epoch - trainer.best_epoch
            print(f"{trainer.run_dir} {stop_message(trainer)}; nothing was changed. It stays stopped: to train "
                  f"further, resume with a larger --early-stop (more than {since}), and --epochs N with N > "
                  f"{trainer.epoch} if needed", file=sys.stderr)
        elif trainer.epoch >= trainer.cfg.train.epochs:
            print(f"{trainer.run_dir} has already trained {trainer.epoch} epochs; nothing was changed. "
                  f"Pass --epochs N with N > {trainer.epoch} to train further", file=sys.stderr)
        elif trainer.epoch == 0:
            print(f"starting {trainer.run_dir} again from scratch with its saved settings (it stopped before "
                  f"its first checkpoint): {trainer.cfg.train.epochs} epochs", file=sys.stderr)
        else:
            print(f"resuming {trainer.run_dir} at epoch {trainer.epoch}/{trainer.cfg.train.epochs}", file=sys.stderr)
    else:
        from .. import distributed
        from ..api import default_out

        distributed.init()  # under torchrun: every process uses rank 0's default folder name
        out = distributed.broadcast_object(args.out or default_out(cfg.data.dataset))
        trainer = Trainer.new(cfg, out, overwrite=args.overwrite, callbacks=callbacks)
        if trainer.dist.is_main:
            print(f"training on {trainer.data.name} ({len(trainer.data.train)} train / {len(trainer.data.test)} test, "
                  f"{trainer.data.dim} values each) -> {out}  [{trainer.device}]"
                  + (f"  data {trainer.data.info.get('storage', 'streamed from disk (over --memory-budget)')}"
                     if trainer.data.streamed else "")
                  + ("  (replaces the run there once the first epoch has trained)"
                     if trainer.lifecycle.pending else "")
                  + (f"  x {trainer.dist.world_size} processes" if trainer.dist.enabled else "")
                  + (f"\n  sizes from the data: {chosen}" if (chosen := sizes_chosen(cfg, trainer.cfg)) else ""),
                  file=sys.stderr)
    before = trainer.epoch
    trainer.fit()
    last = trainer.history[-1] if trainer.history and trainer.epoch > before else None
    if last and trainer.dist.is_main:
        print(f"done: test loss {-last[TEST_BOUND]:.2f} nats per datapoint (negative ELBO) after "
              f"{count(trainer.epoch, 'epoch')}; run folder {trainer.run_dir}"
              + (f" (a quick debug run: each epoch trained only its first {trainer.cfg.train.limit_batches} "
                 "batches)" if trainer.cfg.train.limit_batches else ""))
        if trainer.stopped_early:
            from ..training.session import stop_message

            print(stop_message(trainer))
    from .. import distributed

    distributed.finish()
    return 0


# the perturbation rate of a background model when --background-of is given without --perturb
# (Ren et al. 2019 chose mu in [0.1, 0.2] on their validation data)
BACKGROUND_PERTURB = 0.2


def background_base(args: argparse.Namespace):
    """The settings of the background model of the run --background-of names: its saved config
    with data.perturb (unless --perturb is given); sets the default --out to RUN-background."""
    from ..config import ConfigError, merge
    from ..runs import Run

    if args.resume or args.preset or args.config:
        raise ConfigError("--background-of takes the run's own settings; drop --resume, --preset and --config")
    run = Run(args.background_of)
    if str(run.config.data.dataset).startswith("memory:"):
        raise ConfigError(f"{run.path} was trained on data given in Python, which aevb train cannot read; train "
                          "its background with aevb.fit(data, ..., perturb=0.2) and the same settings")
    if not args.out:
        args.out = str(run.path) + "-background"
    cfg = merge(run.config, {"data": {"perturb": BACKGROUND_PERTURB}}, source=f"--background-of {run.path}")
    cfg.preset = None
    return cfg
