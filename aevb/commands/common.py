"""What every sub-command shares: the run argument, the device option, and turning the errors
users can cause into a one-line message and a non-zero exit."""
from __future__ import annotations

import argparse
import sys


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def add_parser(sub, name: str, help: str, description: str = None) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=description or help, formatter_class=HelpFormatter)


def add_run_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="a run folder written by `aevb train`")


def add_device_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")


def user_errors() -> tuple:
    """Exceptions that mean 'the input was wrong': reported without a traceback."""
    from ..config import ConfigError
    from ..data import DataError
    from ..io import CheckpointError
    from ..runs import RunError
    from ..trainer import TrainingDiverged

    return (ConfigError, DataError, CheckpointError, RunError, TrainingDiverged, FileNotFoundError)


def run_command(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\naevb: interrupted; files already written are complete "
              "(a training run continues with `aevb train --resume RUN`)", file=sys.stderr)
        return 130
    except user_errors() as e:
        print(f"aevb {args.command}: error: {e}", file=sys.stderr)
        return 2 if not type(e).__name__ == "TrainingDiverged" else 3
