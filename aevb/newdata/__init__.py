"""A trained run on data it has not seen: the sources read and checked against the model
(sources.py), and what the model says about them, written item by item (outputs.py)."""
from .outputs import (TABLE_SUFFIXES, PngFolder, check_codes, check_png_folder, decode, encode, png_names,
                      read_codes, reconstruction_blocks, score, score_columns, write_table)
from .sources import SOURCE_FORMS, Items, check_fits, describe_shape, load_items

__all__ = ["TABLE_SUFFIXES", "PngFolder", "check_codes", "check_png_folder", "decode", "encode", "png_names",
           "read_codes", "reconstruction_blocks", "score", "score_columns", "write_table", "SOURCE_FORMS", "Items",
           "check_fits", "describe_shape", "load_items"]
