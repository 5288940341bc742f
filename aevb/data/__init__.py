"""Data sets for aevb: every loader returns a :class:`Dataset` whose splits keep the values in
compact form (uint8 for 8-bit and binary data), in memory or streamed from an on-disk cache, and
hand out float32 batches (``split.take``, ``split.rows``, ``split.batches``).

>>> from aevb.data import load_dataset
>>> ds = load_dataset("digits")                       # embedded, no download
>>> ds = load_dataset("mnist", validation=10000)       # downloads to ~/.cache/aevb/mnist if needed
>>> ds = load_dataset("mnist", "../shared/datasets/mnist", download=False, binarize="dynamic")
>>> ds = load_dataset("folder:my_pictures", image_size=(32, 32), color="auto")
>>> ds = as_dataset(x_uint8)                           # a tensor or array [N, ...], shared, not copied
>>> ds = as_dataset(train_loader, test=test_tensor)    # a DataLoader is read once into memory
"""
from .base import KIND_BINARY, KIND_REAL, KIND_UNIT, KINDS, DataError, Dataset, Split
from .download import RemoteFile, data_root, fetch, file_checksum, verify_file
from .registry import (DATASETS, SPEC_FORMS, as_dataset, canonical_name, check_same_data, dataset_folder,
                       load_configured, load_dataset)
from .spec import MemoryRecord, Spec, parse_spec

__all__ = [
    "load_dataset", "as_dataset", "load_configured", "check_same_data", "parse_spec", "Spec", "MemoryRecord", "Dataset", "Split", "DataError", "DATASETS", "SPEC_FORMS", "data_root",
    "dataset_folder", "canonical_name", "RemoteFile", "fetch", "file_checksum", "verify_file",
    "KIND_BINARY", "KIND_UNIT", "KIND_REAL", "KINDS",
]
