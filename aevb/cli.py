"""The `aevb` command. Each sub-command lives in ``aevb/commands/<name>.py`` and registers
itself through a ``register(subparsers)`` function that sets ``func`` on its parser."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from .version import __version__

COMMANDS = ["train", "evaluate", "sample", "reconstruct", "encode", "score", "decode", "plot", "report", "reproduce",
            "explore", "export", "data"]


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block): what was wrong and where to read more.
    Sub-command parsers are of the same class."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="aevb",
        description="Variational Autoencoders (Auto-Encoding Variational Bayes): train a run, then "
                    "evaluate, sample, reconstruct, plot and report it. `aevb train` with no options "
                    "trains on scikit-learn's digits (no download).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"aevb {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f".commands.{name}", __package__)
        except ModuleNotFoundError as e:
            if e.name and e.name.endswith(f"commands.{name}"):
                continue  # a command not present in this build
            raise
        module.register(sub)
    return p


# glibc's M_MMAP_THRESHOLD (mallopt): blocks of at least this many bytes get their own mapping,
# returned to the system when freed.
MMAP_THRESHOLD = 1 << 20
# glibc's M_TRIM_THRESHOLD: free memory at the top of the heap kept for reuse, up to this many
# bytes. Fixing the mmap threshold also fixes this one at its default, 128 KiB, so the heap was
# shrunk and grown again around every batch: `aevb score` of MNIST's test set with k = 100 spent
# 8.8 s of its 19.7 s in the kernel; with 64 MiB it takes 12.6 s, peak +29 MB.
TRIM_THRESHOLD = 64 << 20


def return_large_blocks() -> None:
    """Fix glibc's threshold for giving freed memory back at 1 MiB. By default glibc raises it
    after each large free (up to 32 MiB), so a pass over full-size photos, whose batches are a
    few MB each, leaves its freed batches in the heap: `aevb score` of 2,001 photos ended with
    3.8 GB resident instead of 0.2 GB. The heap keeps up to TRIM_THRESHOLD of free memory at its
    top. Nothing happens where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, MMAP_THRESHOLD)  # -3: M_MMAP_THRESHOLD
        libc.mallopt(-1, TRIM_THRESHOLD)  # -1: M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def main(argv: Optional[List[str]] = None) -> int:
    from .commands.common import run_command

    return_large_blocks()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
