"""Data a PyTorch user holds (tensor, array, Dataset, DataLoader) as aevb's Dataset: shared
storage, the same splits whatever the form, the record a run keeps, and one line per bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from aevb.config import RunConfig, validate
from aevb.data import DataError, as_dataset, check_same_data, load_configured, load_dataset, parse_spec
from aevb.data.imageset import LoadOptions
from aevb.data.utils import TEST_SPLIT_SEED, holdout_indices
from aevb.training import Trainer
from aevb import metrics as M


def digits_like(n=60, seed=0, shape=(6, 5)):
    return np.random.RandomState(seed).randint(0, 256, size=(n,) + shape).astype(np.uint8)


def rows_of(split) -> np.ndarray:
    """The stored rows of a split (unscaled), in order."""
    return np.concatenate(list(split.scan()))


def held_out(n):
    """The rule every data set without a test split uses: 10 %, TEST_SPLIT_SEED."""
    return holdout_indices(n, max(1, int(round(n * 0.1))), TEST_SPLIT_SEED)


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


# ----------------------------------------------------------------------------- storage
def test_a_uint8_array_stays_uint8_and_shares_the_users_memory():
    x = digits_like(60)
    ds = as_dataset(x)
    assert ds.train.storage_dtype == ds.test.storage_dtype == "uint8"
    assert ds.kind == "unit" and ds.levels == 256 and ds.image_shape == (1, 6, 5)
    for split in (ds.train, ds.test):
        assert np.shares_memory(split._x.numpy(), x)
    kept, held = held_out(60)
    assert np.array_equal(rows_of(ds.train), x[kept].reshape(len(kept), -1))
    assert np.array_equal(rows_of(ds.test), x[held].reshape(len(held), -1))
    # batches are values / 255 as float32
    assert torch.allclose(ds.test.take([0]), torch.from_numpy(x[held[0]].reshape(1, -1)).float() / 255)


def test_a_uint8_tensor_is_shared_too_and_a_batch_changed_in_place_leaves_it_alone():
    t = torch.from_numpy(digits_like(40))
    ds = as_dataset(t, test=t[:5])
    assert ds.train._x.data_ptr() == t.data_ptr()
    f = torch.rand(30, 8)
    before = f.clone()
    fds = as_dataset(f, test=f[:3])
    assert fds.train._x.data_ptr() == f.data_ptr() and fds.train.storage_dtype == "float32"
    for batch in (fds.train.rows(0, 10), next(iter(fds.train.batches(8))), fds.train.take([1, 2])):
        batch.mul_(0)
    assert torch.equal(f, before)


def test_a_float64_arrays_values_survive():
    x = np.random.RandomState(1).normal(size=(50, 7)) * 1e3 + 1e-9  # real values, not float32-representable
    ds = as_dataset(x)
    assert ds.train.storage_dtype == "float64" and ds.kind == "real" and ds.levels is None
    assert np.shares_memory(ds.train._x.numpy(), x)
    kept, held = held_out(50)
    assert np.array_equal(rows_of(ds.train), x[kept]) and np.array_equal(rows_of(ds.test), x[held])
    batch = ds.test.take([0, 1])  # batches are float32, what the model computes in
    assert batch.dtype == torch.float32 and torch.equal(batch, torch.from_numpy(x[held[:2]]).float())
    for b in (ds.train.rows(0, 3), next(iter(ds.train.batches(4))), ds.train.materialize()):
        assert b.dtype == torch.float32


def tiny_memory_run(x, out):
    """A one-epoch run of a 2-latent MLP on ``x``, given in memory (aevb.fit)."""
    import aevb

    return aevb.fit(None, x, out=out, latent_dim=2, encoder_hidden=[8], epochs=1, batch_size=16, progress=False,
                    tensorboard=False, images_every=0, report=False)


def test_a_float64_array_trains_a_float32_model(tmp_path):
    x = np.random.RandomState(1).normal(size=(64, 10))
    run = tiny_memory_run(x, tmp_path / "run")
    assert run.config.model.likelihood == "gaussian" and np.isfinite(run.metrics()[-1][M.TEST_BOUND])


def test_binary_and_unit_float_data_get_todays_kinds():
    binary = (np.random.RandomState(2).rand(30, 4) < 0.5)
    ds = as_dataset(binary)
    assert ds.kind == "binary" and ds.levels == 2 and ds.train.storage_dtype == "uint8"
    assert np.shares_memory(ds.train._x.numpy(), binary)  # bool is viewed as 0/1 bytes
    assert as_dataset(binary.astype(np.uint8)).kind == "binary"  # uint8 0/1: binary, not / 255
    assert as_dataset(np.random.RandomState(3).rand(30, 4).astype(np.float32)).kind == "unit"


def test_channels_last_images_are_transposed_to_channels_first():
    x = digits_like(20, shape=(6, 5, 3))
    ds = as_dataset(x, test=x[:2])
    assert ds.image_shape == (3, 6, 5)
    assert np.array_equal(rows_of(ds.test)[1], np.moveaxis(x[1], 2, 0).reshape(-1))


def test_labels_follow_their_datapoints():
    x, y = digits_like(50), np.arange(50) % 7
    ds = as_dataset(x, labels=y, validation=5, seed=3)
    kept, held = held_out(50)
    assert torch.equal(ds.test.y, torch.from_numpy(y[held]))
    assert len(ds.valid) == 5 and len(ds.train) == 40
    # every training / validation label is the label of its own row
    for split in (ds.train, ds.valid):
        for row, label in zip(rows_of(split), split.y.tolist()):
            i = int(np.flatnonzero((x.reshape(50, -1) == row).all(1))[0])
            assert y[i] == label
    assert as_dataset((x, y)).test.y.tolist() == y[held].tolist()  # a (data, labels) pair


# ----------------------------------------------------------------------------- Dataset and DataLoader
class Items(torch.utils.data.Dataset):
    """A map-style data set of (tensor, label) items, as a PyTorch user writes one."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return torch.from_numpy(self.x[i]), self.y[i]


def test_a_dataset_and_a_dataloader_give_the_same_splits_as_the_tensor(capsys):
    x, y = digits_like(45), np.arange(45) % 3
    want = as_dataset(torch.from_numpy(x), labels=torch.from_numpy(y))
    loader = DataLoader(Items(x, y), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(5))
    unbatched = DataLoader(Items(x, y), batch_size=None)
    for given in (TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), Items(x, y), loader, unbatched):
        ds = as_dataset(given)
        assert ds.image_shape == want.image_shape and ds.kind == want.kind and ds.levels == want.levels
        for name in ("train", "test"):
            a, b = ds.split(name), want.split(name)
            assert np.array_equal(rows_of(a), rows_of(b)) and torch.equal(a.y, b.y), (type(given), name)
        assert ds.info["memory"]["sha256"] == want.info["memory"]["sha256"]
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 2 and all("read the DataLoader once" in line for line in said)
    assert "shuffle" in said[0] and "shuffle" not in said[1]  # only the loader that shuffles is said to


def test_in_memory_training_equals_training_on_the_same_array_file(tmp_path):
    x = digits_like(80, seed=4)
    np.save(tmp_path / "x.npy", x)

    def cfg(dataset, budget=None):
        c = RunConfig()
        c.data.dataset, c.data.memory_budget = dataset, budget
        c.model.latent_dim, c.model.encoder_hidden = 3, [16]
        c.train.epochs, c.train.batch_size, c.train.eval_batch_size = 2, 16, 32
        c.train.progress, c.train.tensorboard, c.train.images_every = False, False, 0
        return c

    ds = as_dataset(x)
    memory = Trainer.new(cfg(ds.info["spec"]), tmp_path / "memory", data=ds)
    assert all(np.shares_memory(s._x.numpy(), x) for s in memory.splits.values())  # trained without a copy
    h1 = memory.fit()
    streamed = Trainer.new(cfg(f"array:{tmp_path / 'x.npy'}", "1KB"), tmp_path / "file")
    h2 = streamed.fit()
    assert streamed.data.train.streamed and not memory.data.train.streamed
    strip = lambda h: [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in h]
    assert strip(h1) == strip(h2)
    for (n, a), b in zip(memory.model.state_dict().items(), streamed.model.state_dict().values()):
        assert torch.equal(a, b), n
    # the run says truthfully where its data came from, and its data cannot be loaded from its config
    saved = json.loads((tmp_path / "memory" / "config.json").read_text())["data"]["dataset"]
    assert saved == ds.info["spec"] and saved.startswith("memory:80x6x5:uint8:")
    cfg_back = RunConfig.from_dict(json.loads((tmp_path / "memory" / "config.json").read_text()))
    validate(cfg_back)
    with pytest.raises(DataError) as e:
        load_configured(cfg_back.data, run=tmp_path / "memory")
    assert one_line(e) == (f"{tmp_path / 'memory'} was trained on data given in memory (80 x 6 x 5 uint8); "
                           "pass --data SOURCE (Python: data=...)")
    assert len(load_configured(cfg_back.data, data=x, exact=True).test) == 8


# ----------------------------------------------------------------------------- the run's record
def test_config_validation_accepts_the_record_and_refuses_a_damaged_one():
    ds = as_dataset(digits_like(30))
    cfg = RunConfig()
    cfg.data.dataset = ds.info["spec"]
    validate(cfg)
    spec = parse_spec(cfg.data.dataset)
    assert spec.form == "memory" and spec.record.shape == (30, 6, 5) and spec.shape() == (1, 6, 5)
    cfg.data.dataset = ds.info["spec"][:-3]
    with pytest.raises(Exception) as e:
        validate(cfg)
    assert "memory:SHAPE:DTYPE:SHA256" in one_line(e)


def test_loading_a_memory_runs_data_needs_the_data_and_checks_them():
    x = digits_like(30)
    cfg = RunConfig()
    cfg.data.dataset, cfg.data.validation = as_dataset(x).info["spec"], 3
    with pytest.raises(DataError) as e:
        load_configured(cfg.data, run="runs/mine")
    assert one_line(e) == ("runs/mine was trained on data given in memory (30 x 6 x 5 uint8); pass --data SOURCE "
                           "(Python: data=...)")
    with pytest.raises(DataError) as e:  # no run yet (a new training given the record as its data set)
        load_configured(cfg.data)
    assert one_line(e).startswith("data.dataset names data given in memory (30 x 6 x 5 uint8), which cannot be")
    again = load_configured(cfg.data, data=x, exact=True)  # the run's own split settings apply
    assert len(again.valid) == 3 and len(again.test) == 3
    with pytest.raises(DataError) as e:
        load_configured(cfg.data, data=digits_like(30, shape=(5, 6)), run="runs/mine")
    assert "datapoints of 1x5x6" in one_line(e) and "takes 1x6x5" in one_line(e)


def test_the_fingerprint_check_refuses_another_array_of_the_same_shape():
    x = digits_like(30)
    record = parse_spec(as_dataset(x).info["spec"]).record
    check_same_data(record, as_dataset(x.copy()), "runs/mine")  # the same values: accepted
    other = x.copy()
    other[7, 2, 3] ^= 1
    with pytest.raises(DataError) as e:
        check_same_data(record, as_dataset(other), "runs/mine")
    assert "other values of the same shape" in one_line(e) and record.sha256[:12] in one_line(e)
    with pytest.raises(DataError) as e:
        check_same_data(record, as_dataset(x[:29]), "runs/mine")
    assert "29 x 6 x 5 uint8" in one_line(e)
    with pytest.raises(DataError) as e:
        check_same_data(record, as_dataset(x.astype(np.float32)), "runs/mine")
    assert "30 x 6 x 5 float32" in one_line(e)
    # shape alone (evaluation, plots): another array of the run's shape is fine
    check_same_data(record, as_dataset(other), "runs/mine", exact=False)


# ----------------------------------------------------------------------------- names pass through
def test_a_name_or_an_aevb_dataset_passes_through():
    ds = as_dataset("digits", validation=100)
    assert ds.name == "digits" and len(ds.valid) == 100
    assert as_dataset(ds) is ds
    with pytest.raises(DataError) as e:
        as_dataset("digits", test=np.zeros((3, 64)))
    assert "test apply to data given in memory" in one_line(e)


# ----------------------------------------------------------------------------- bad input, one line each
class Ragged(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.zeros(3 if i < 2 else 4)


@pytest.mark.parametrize("make, words", [
    (lambda: np.array([[0.5, 0.1], [0.2, np.nan], [np.inf, 0.0]]), "datapoint 1 holds NaN or infinity (2 datapoint(s)"),
    (lambda: torch.full((3, 2), float("inf")), "datapoint 0 holds NaN or infinity"),
    (lambda: np.zeros((0, 5), np.float32), "is empty (shape (0, 5))"),
    (lambda: torch.zeros(7), "has shape (7,); expected [N, D]"),
    (lambda: np.zeros((1, 5), np.float32), "only 1 datapoint; need at least 2"),
    (lambda: Ragged(), "item 2 has shape (4,) but item 0 has (3,)"),
    (lambda: DataLoader(Ragged(), batch_size=2), "item 2 has shape (4,) but item 0 has (3,)"),
    (lambda: DataLoader(Ragged(), batch_size=4), "its batch 0 could not be made (stack expects each tensor"),
    (lambda: TensorDataset(torch.zeros(0, 3)), "the data is empty"),
    (lambda: DataLoader([{"x": torch.zeros(3)}] * 4, batch_size=2), "its batches are dicts, not tensors"),
    (lambda: [torch.zeros(3), torch.zeros(3)], "stack them into one tensor"),
    (lambda: {"x": 1}, "cannot read the data: a dict"),
    (lambda: Items(np.zeros((4, 3), np.float32), ["cat"] * 4), "the label of item 0 is 'cat'; labels must be integers"),
    (lambda: np.array([["a", "b"], ["c", "d"]]), "has dtype <U1; expected numbers"),
])
def test_each_bad_input_gives_one_line(make, words):
    with pytest.raises(DataError) as e:
        as_dataset(make())
    assert words in one_line(e)


def test_labels_of_another_length_and_parts_of_another_shape_are_refused():
    with pytest.raises(DataError) as e:
        as_dataset(digits_like(10), labels=np.arange(9))
    assert "9 labels for 10 datapoints" in one_line(e)
    with pytest.raises(DataError) as e:
        as_dataset(digits_like(10), test=digits_like(3, shape=(5, 6)))
    assert "the test data have datapoints of shape (5, 6) but the data have (6, 5)" in one_line(e)
    with pytest.raises(DataError) as e:
        as_dataset(digits_like(10), test=np.zeros((3, 6, 5), np.float32))
    assert "mix uint8 with other dtypes" in one_line(e)
    with pytest.raises(DataError) as e:
        as_dataset(digits_like(10), image_size=(3, 3))
    assert "image_size apply to data sets loaded from files" in one_line(e)


def test_a_memory_spec_cannot_be_loaded_from_files():
    spec = as_dataset(digits_like(12)).info["spec"]
    with pytest.raises(DataError) as e:
        load_dataset(spec, options=LoadOptions())
    assert one_line(e).startswith(f"{spec[:40]}... names data given in memory (12 x 6 x 5 uint8), which aevb "
                                  "cannot load by itself")


# ----------------------------------------------------------------------------- evaluate and plot --data
@pytest.fixture(scope="module")
def memory_run(tmp_path_factory):
    """A run trained on a uint8 array given in memory, and that array saved as a .npy file."""
    root = tmp_path_factory.mktemp("memory-run")
    x = digits_like(60, seed=6)
    np.save(root / "x.npy", x)
    np.save(root / "other.npy", digits_like(60, seed=6, shape=(5, 6)))
    tiny_memory_run(x, root / "run")
    return root


def test_evaluate_and_plot_of_a_memory_run_need_data_of_its_shape(memory_run, capsys):
    from aevb.cli import main

    run = memory_run / "run"
    said = f"{run} was trained on data given in memory (60 x 6 x 5 uint8); pass --data SOURCE (Python: data=...)"
    for argv in (["evaluate", str(run)], ["plot", str(run), "reconstructions"]):
        before = sorted(p.name for p in run.rglob("*"))
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith(said) and len(err.splitlines()) == 1, err
        assert sorted(p.name for p in run.rglob("*")) == before  # nothing written
        assert main(argv + ["--data", f"array:{memory_run / 'other.npy'}"]) == 2
        err = capsys.readouterr().err.strip()
        assert "datapoints of 1x5x6 (C x H x W) but the run takes 1x6x5" in err and len(err.splitlines()) == 1, err

    out = memory_run / "ev.json"
    assert main(["evaluate", str(run), "--data", f"array:{memory_run / 'x.npy'}", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["n"] == 6 and result["dim"] == 30  # the run's own test hold-out of the same array
    capsys.readouterr()
    assert main(["plot", str(run), "reconstructions", "--data", f"array:{memory_run / 'x.npy'}",
                 "--out", str(memory_run / "figs")]) == 0
    assert list((memory_run / "figs").glob("*.png"))
    assert main(["plot", str(run), "samples", "--out", str(memory_run / "figs2")]) == 0  # the model alone


def test_data_given_for_a_run_on_files_get_its_settings_and_must_have_its_shape(tmp_path):
    np.save(tmp_path / "x.npy", digits_like(20))
    d = RunConfig().data  # digits, 8x8
    d.validation = 4
    with pytest.raises(DataError) as e:
        load_configured(d, data=f"array:{tmp_path / 'x.npy'}", run="runs/digits", image_shape=(1, 8, 8))
    assert one_line(e) == (f"array:{tmp_path / 'x.npy'} has datapoints of 1x6x5 (C x H x W) but runs/digits takes "
                           "1x8x8; give data of the run's shape")
    ds = load_configured(d, data=f"array:{tmp_path / 'x.npy'}", image_shape=(1, 6, 5))
    assert len(ds.valid) == 4 and len(ds.test) == 2  # the run's validation setting, the array rule's test
