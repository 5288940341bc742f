"""A trained run on data it has not seen: the sources read and checked against the model
(sources.py), what the model says about them item by item (outputs.py), how novel they are
(novelty.py), the tables it hands back (results.py), how outputs reach the disk (files.py: PNG
folders, one writer; tables.py: .npz, .npy, .csv and codes read back) and the checks of what it
is given (checks.py)."""
from .checks import MAX_SAMPLES, argument, check_k, check_pictures, check_samples, check_seed
from .files import OutputClaim, PngFolder, check_png_folder, ids_path, png_names, resolve_output
from .outputs import check_codes, decode, encode, encode_items, reconstruction_blocks, score, score_columns
from .tables import TABLE_SUFFIXES, check_ids_fit, check_table_path, codes_of, matrix_note, read_codes, write_table
from .novelty import (COMPRESSORS, DEFAULT_COMPRESSOR, DEFAULT_RANK_BY, RANK_BY, TYPICALITY_TRAIN, Typicality,
                      check_compressor, complexity_bits, compressed_bits, missing_rank, nll_bits, rank_against,
                      score_novelty, train_sample, typicality_test)
from .results import Codes, ItemTable, Scores
from .sources import SOURCE_FORMS, Items, check_fits, describe_shape, load_items

__all__ = ["MAX_SAMPLES", "argument", "check_k", "check_pictures", "check_samples", "check_seed",
           "TABLE_SUFFIXES", "OutputClaim", "PngFolder", "resolve_output",
           "check_codes", "check_ids_fit", "check_png_folder", "check_table_path", "codes_of", "decode", "encode", "encode_items",
           "ids_path", "matrix_note", "png_names", "read_codes", "reconstruction_blocks", "score", "score_columns",
           "write_table",
           "COMPRESSORS", "DEFAULT_COMPRESSOR", "DEFAULT_RANK_BY", "RANK_BY", "TYPICALITY_TRAIN", "Typicality",
           "check_compressor", "complexity_bits", "compressed_bits", "missing_rank", "nll_bits", "rank_against",
           "score_novelty", "train_sample", "typicality_test",
           "Codes", "ItemTable", "Scores", "SOURCE_FORMS", "Items", "check_fits", "describe_shape", "load_items"]
