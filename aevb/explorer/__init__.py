"""The latent explorer: ``aevb explore RUN`` writes ``RUN/explorer.html``, one self-contained
page where the run's decoder runs in the browser (see :mod:`aevb.explorer.page`)."""
from .page import (DEFAULT_MAX_MB, EXPLORER_FILE, HARD_MAX_MB, ExplorerError, ExplorerResult,
                   write_explorer)
from .program import ENCODINGS, UnsupportedDecoder, decoder_program

__all__ = ["write_explorer", "ExplorerError", "ExplorerResult", "UnsupportedDecoder", "decoder_program",
           "EXPLORER_FILE", "DEFAULT_MAX_MB", "HARD_MAX_MB", "ENCODINGS"]
