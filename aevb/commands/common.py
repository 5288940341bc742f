"""What every sub-command shares: the run argument, the device and checkpoint options, the checks
of a command that writes an image grid, and turning the errors users can cause into a one-line message and a
non-zero exit."""
from __future__ import annotations

import argparse
import errno
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from .. import denormals, threads
from ..bounds import eval_rows
from ..config.ranges import THREADS
from ..devices import PRECISIONS, resolve_device
from ..errors import USER_ERRORS, ConfigError, interruption
from ..newdata import checks
from ..runs import CHECKPOINTS, Run, check_output
from ..sampling import precision_for


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def add_parser(sub, name: str, help: str, description: str = None) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=description or help, formatter_class=HelpFormatter)


def add_run_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="a run folder written by `aevb train`")


def check_seed(seed: int, option: str = "--seed") -> int:
    """Refuse a seed outside the one range every seed has (aevb.config.ranges.SEEDS), naming
    ``option``: the one check of seeds, aevb.newdata.checks.check_seed, with the option's name."""
    return checks.check_seed(seed, python=False, name=option)


def say(args: argparse.Namespace):
    """A function that prints one line of a note to stderr under the command's name."""
    return lambda text: print(f"aevb {args.command}: {text}", file=sys.stderr, flush=True)


def check_threads(threads, option: str = "--threads") -> None:
    """Refuse a thread count outside the range train.threads has (aevb.config.ranges.THREADS);
    None (PyTorch's choice) passes."""
    if threads is not None:
        check_range(threads, THREADS, option)


def check_range(value: int, bounds, option: str) -> None:
    lo, hi = bounds
    if not lo <= value <= hi:
        raise ConfigError(f"{option} must be in {lo}..{hi}; got {value}")


def add_device_argument(p: argparse.ArgumentParser) -> None:
    """--device, and --threads: where a command computes and on how many CPU threads."""
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    add_threads_argument(p)


def add_precision_argument(p: argparse.ArgumentParser, bounds: bool = True) -> None:
    """--precision of the networks' arithmetic (an evaluation's bounds, or the outputs of a command
    without bounds, stay float32)."""
    kept = "the bounds are summed in float32" if bounds else "their outputs are converted to float32"
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help=f"bf16: the networks run in bfloat16 autocast, {kept} (faster for large MLPs and conv "
                        "networks on CPUs whose bfloat16 products outrun float32's, such as AMX or AMD's Zen 4; "
                        "slower elsewhere, which the command says; default fp32)")


def precision_of(args: argparse.Namespace, model):
    """The context of --precision for ``model``'s passes (aevb.sampling.precision_for)."""
    return precision_for(model, args.precision)


def add_threads_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch (default: one for a small "
                   "model, where sharing each operation costs more than it saves; else PyTorch's choice)%(default).0s")


def choose_threads(args: argparse.Namespace, model) -> int:
    """The process's CPU threads for ``model``'s work: --threads, or as aevb.threads chooses for
    one evaluation batch of it."""
    return threads.set_threads(getattr(args, "threads", None), threads.linear_flops(model, eval_rows(model)))


def add_checkpoint_argument(p: argparse.ArgumentParser) -> None:
    """--checkpoint last|best: which of the run's checkpoints the command takes the model from."""
    p.add_argument("--checkpoint", choices=list(CHECKPOINTS), default="last",
                   help="the model of the last epoch (checkpoints/last.pt) or of the epoch with the best "
                        "validation bound (checkpoints/best.pt, in runs trained with --validation)")


def open_checked_run(args: argparse.Namespace) -> Run:
    """The run, refused (before any work) when the --checkpoint asked for is not there."""
    run = Run(args.run)
    run.checkpoint_file(args.checkpoint)
    return run


def add_grid_arguments(p: argparse.ArgumentParser, n_default: int, n_help: str, ncol_default, ncol_help: str,
                       out_name: str) -> None:
    """-n, --ncol and --out of a command that writes one PNG grid of images (sample, reconstruct)."""
    p.add_argument("-n", type=int, default=n_default, help=n_help)
    p.add_argument("--ncol", type=int, default=ncol_default, help=ncol_help)
    p.add_argument("--out", metavar="FILE", help=f"PNG to write (default: RUN/images/{out_name})")


def open_grid_run(args: argparse.Namespace, what: str, out_name: str):
    """Check -n (1..10000 ``what``), --ncol and --out (a PNG, before any work), then load the
    model of the run's --checkpoint on --device: returns (run, out path, aevb.runs.LoadedModel)."""
    if not 1 <= args.n <= 10000:
        raise ConfigError(f"-n must be in 1..10000 {what}; got {args.n}")
    if args.ncol is not None and args.ncol < 1:
        raise ConfigError(f"--ncol must be at least 1; got {args.ncol}")
    run = open_checked_run(args)
    out = Path(args.out) if args.out else run.images_dir / out_name
    check_output(out, "--out", suffixes=(".png",))
    loaded = run.open_model(resolve_device(args.device), args.checkpoint)
    choose_threads(args, loaded.model)
    return run, out, loaded


def user_errors() -> tuple:
    """Exceptions that mean 'the input was wrong' (or the machine refused, e.g. a full disk):
    reported as one line, without a traceback."""
    return USER_ERRORS + (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def run_command(args: argparse.Namespace) -> int:
    """Run a sub-command: errors a user can cause end as one line and exit status 2 (3 for a
    diverged training run); anything else as one line pointing to a log file that holds the
    traceback (exit status 1). Never a bare traceback. The process's thread count is as it was
    afterwards (a command may choose its own: --threads), and so is its handling of denormal
    numbers, flushed to zero while the command runs (aevb.denormals)."""
    try:
        with threads.kept(), denormals.flushed():
            if getattr(args, "threads", None) is not None:  # given: from the start (commands that load a
                check_threads(args.threads)                   # model choose by its size otherwise)
                threads.set_threads(args.threads)
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return interrupted()
    except user_errors() as e:
        print(f"aevb {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 3 if type(e).__name__ == "TrainingDiverged" else 2
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            return internal_error(args, e)
        where = f" {e.filename}" if e.filename else ""
        print(f"aevb {args.command}: error: disk full: could not write{where}; free some space on that disk "
              "and run the command again", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"aevb {args.command}: error: out of memory; use smaller batches (--batch-size, "
              "--memory-budget) or a smaller model", file=sys.stderr)
        return 2
    except Exception as e:  # a bug, or a fault nobody foresaw
        if interruption(e) is not None:  # Ctrl-C that a library's clean-up turned into another error
            return interrupted()
        return internal_error(args, e)


def interrupted() -> int:
    print("\naevb: interrupted; files already written are complete "
          "(a training run continues with `aevb train --resume RUN`)", file=sys.stderr)
    return 130


def internal_error(args: argparse.Namespace, e: BaseException) -> int:
    """One line naming the error and the log file holding its traceback; exit status 1."""
    try:
        log = write_error_log(args, e)
    except OSError:
        log = "nowhere: the log could not be written either"
    print(f"aevb {args.command}: internal error: {type(e).__name__}: {one_line(e)[:300]} "
          f"(the full traceback is in {log}; please report it)", file=sys.stderr)
    return 1


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)) and e.filename:
        text = f"{e.strerror}: {e.filename}"
    return text or type(e).__name__


def write_error_log(args: argparse.Namespace, e: BaseException) -> Path:
    """Write the traceback of ``e`` to the log a run writer named (``e.aevb_log``, e.g.
    RUN/error.log) or else to a file in the temporary folder; returns its path."""
    text = (f"aevb {args.command} failed at {time.strftime('%Y-%m-%dT%H:%M:%S')}\n"
            f"command: {' '.join(sys.argv)}\n\n"
            + "".join(traceback.format_exception(type(e), e, e.__traceback__)))
    log = getattr(e, "aevb_log", None)
    if log is not None:
        try:
            with open(log, "a") as f:
                f.write(text + "\n")
            return Path(log)
        except OSError:
            pass
    fd, path = tempfile.mkstemp(prefix=f"aevb-{args.command}-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".log")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return Path(path)
