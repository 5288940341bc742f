"""The one parser of data-set specs: forms, aliases, shapes, splits, and the memory record."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aevb.config import ConfigError, RunConfig, validate
from aevb.data import DataError, MemoryRecord, as_dataset, load_dataset, parse_spec
from aevb.data.spec import DATASETS, NAMED_SHAPES, short_name
from aevb.training.estimate import shape_from_config


@pytest.mark.parametrize("text, form, name", [
    ("mnist", "named", "mnist"), (" FMNIST ", "named", "fashion-mnist"), ("celeb-a", "named", "celeba"),
    ("Frey_Face", "named", "frey-face"), ("folder:pics", "folder", None), ("FOLDER: pics", "folder", None),
    ("array:x.npz", "array", None), ("npy:x.npy", "array", None),
])
def test_forms_and_aliases(text, form, name):
    spec = parse_spec(text)
    assert (spec.form, spec.name) == (form, name)
    if form != "named":
        assert spec.path == Path(text.split(":", 1)[1].strip())
    assert spec.pictures == (form == "folder" or name == "celeba")


@pytest.mark.parametrize("text, words", [
    ("", "no data set given"), ("minst", "unknown data set 'minst'; choose one of: digits, mnist"),
    ("folder:", "give a path after 'folder:'"), ("memory", "pass the data itself"),
    ("memory:28x28:uint8:abc", "is not the record of data given in memory"),
])
def test_bad_specs_are_one_line(text, words):
    with pytest.raises(DataError) as e:
        parse_spec(text)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_every_named_shape_is_the_shape_its_loader_gives():
    assert set(NAMED_SHAPES) | {"celeba"} == set(DATASETS)
    assert load_dataset("digits").image_shape == NAMED_SHAPES["digits"] == parse_spec("digits").shape()
    assert parse_spec("celeba").shape() == (3, 218, 178)
    assert parse_spec("celeba").shape(image_size=[64, 64], crop=[148, 148]) == (3, 64, 64)
    assert parse_spec("celeba").shape(crop=[148, 148]) == (3, 148, 148)


def test_shapes_known_before_loading(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((5, 7, 9, 3), np.uint8))  # channels last
    cfg = RunConfig()
    for dataset, size, color, want in ((f"array:{tmp_path / 'x.npy'}", None, None, (3, 7, 9)),
                                       ("folder:pics", [32, 24], "rgb", (3, 32, 24)), ("folder:pics", None, None, None),
                                       ("omni", None, None, (1, 28, 28)), ("nothing-known", None, None, None)):
        cfg.data.dataset, cfg.data.image_size, cfg.data.color = dataset, size, color
        assert shape_from_config(cfg) == want, dataset
    cfg.data.dataset, cfg.data.image_size, cfg.data.color = as_dataset(np.zeros((10, 3, 4, 4), np.uint8)).info["spec"], None, None
    assert shape_from_config(cfg) == (3, 4, 4)


def test_new_data_forms(tmp_path):
    (tmp_path / "pics").mkdir()
    np.save(tmp_path / "a.npy", np.zeros((2, 3)))
    (tmp_path / "one.png").write_bytes(b"")
    assert parse_spec("mnist:TEST", splits=True).split == "test"
    assert parse_spec(str(tmp_path / "pics"), splits=True).form == "folder"
    assert parse_spec(str(tmp_path / "a.npy"), splits=True).form == "array"
    one = parse_spec(str(tmp_path / "one.png"), splits=True)
    assert one.form == "file" and one.bare
    assert parse_spec("mnist", splits=True).split is None  # the caller asks for a split
    with pytest.raises(DataError, match="give a split after the data set's name"):
        parse_spec("mnist:tset", splits=True)
    with pytest.raises(DataError, match="file not found"):
        parse_spec(str(tmp_path / "none.png"), splits=True)


def test_the_memory_record_round_trips_through_its_spec():
    rec = MemoryRecord(shape=(900, 784), dtype="float32", counts={"train": 900, "valid": 50, "test": 50},
                       sha256="ab" * 32)
    assert rec.spec() == "memory:900x784+valid50+test50:float32:" + "ab" * 32
    assert parse_spec(rec.spec()).record == rec
    assert MemoryRecord.from_dict(rec.to_dict()) == rec
    assert rec.describe() == "900 x 784 float32, with 50 valid and 50 test datapoints given apart"
    assert rec.image_shape() == (1, 28, 28)


def test_config_validation_reads_specs_through_the_parser():
    cfg = RunConfig()
    cfg.data.dataset, cfg.data.image_size = "celeb-a", [64, 64]  # an alias of a picture set
    validate(cfg)
    cfg.data.dataset = "mnist"
    with pytest.raises(ConfigError, match="image size and crop apply to folder:PATH and celeba data only"):
        validate(cfg)
    cfg.data.dataset, cfg.data.image_size = "memory:10x3:uint8:" + "0" * 63, None
    with pytest.raises(ConfigError, match="data.dataset .*is not the record of data given in memory"):
        validate(cfg)


def test_short_names_for_run_folders():
    assert [short_name(t) for t in ("fmnist", "folder:a/faces/", "array:/x/y.npz", "what")] == \
        ["fashion-mnist", "faces", "y.npz", "what"]
    assert short_name(as_dataset(np.zeros((4, 2), np.float32)).info["spec"]) == "memory"
