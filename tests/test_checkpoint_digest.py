"""The digests that seal checkpoints: XXH3-128 by chunks of large tensors with the finite record,
and the earlier SHA-256 schemes."""
import hashlib

import pytest
import torch
import xxhash

from aevb import checkpoints


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 64 bytes, so a tensor of a few hundred values spans several."""
    monkeypatch.setattr(checkpoints, "CHUNK", 64)


def state():
    g = torch.Generator().manual_seed(0)
    return {"model": {"w": torch.randn(40, 10, generator=g), "b": torch.randn(10, generator=g)},
            "epoch": 3, "config": {"lr": 1e-3, "hidden": [400]}}


def test_a_changed_byte_in_any_chunk_is_found(small_chunks):
    sealed = checkpoints.seal(state())
    assert sealed["digest"]["algorithm"] == "xxh3-chunks"
    assert checkpoints.problem(sealed) is None
    flat = sealed["model"]["w"].view(-1).view(torch.uint8)
    for i in (0, 63, 64, 700, len(flat) - 1):  # first, last of a chunk, first of the next, inside, the end
        damaged = {**sealed, "model": {k: v.clone() for k, v in sealed["model"].items()}}
        damaged["model"]["w"].view(-1).view(torch.uint8)[i] ^= 1
        assert "does not match" in checkpoints.problem(damaged), i


@pytest.mark.parametrize("new_hash", [xxhash.xxh3_128, hashlib.sha256])
def test_chunk_digests_are_the_digests_of_each_chunk_in_order(small_chunks, new_hash):
    data = torch.arange(300, dtype=torch.uint8).numpy()
    want = b"".join(new_hash(data[i:i + 64]).digest() for i in range(0, 300, 64))
    before = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)  # the same digest on one thread and on several
            assert checkpoints._chunk_digests(data, new_hash) == want
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("earlier_scheme", ["sha256", "sha256-chunks"])
def test_the_schemes_differ_and_earlier_ones_still_load(small_chunks, earlier_scheme):
    s = state()
    digests = {a: checkpoints.entry_digest(s["model"], a) for a in checkpoints.ALGORITHMS}
    assert len(set(digests.values())) == len(digests)  # no checkpoint passes under another scheme by accident
    earlier = {**s, "digest": {"algorithm": earlier_scheme,  # as an earlier version sealed it: no finite record
                               "entries": {k: checkpoints.entry_digest(v, earlier_scheme) for k, v in s.items()}}}
    assert checkpoints.problem(earlier) is None
    earlier["model"]["b"][0] += 1
    assert "does not match" in checkpoints.problem(earlier)
    nan = {**earlier, "model": {**s["model"], "w": s["model"]["w"].clone()}}
    nan["model"]["w"][3, 4] = float("nan")
    nan["digest"] = {**earlier["digest"], "entries": {**earlier["digest"]["entries"], "model":
                                                      checkpoints.entry_digest(nan["model"], earlier_scheme)}}
    assert "holds NaN or infinite values in its model weights (w)" in checkpoints.problem(nan)


def test_the_seal_records_whether_model_and_optimizer_are_finite():
    s = {**state(), "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}}}}
    assert checkpoints.seal(s)["digest"]["finite"] == {"model": True, "optimizer": True}
    s["optimizer"]["state"][0]["exp_avg"][1] = float("inf")
    sealed = checkpoints.seal(s)
    assert sealed["digest"]["finite"] == {"model": True, "optimizer": False}
    # a sealed non-finite state is refused for what it is, with the tensor named
    assert checkpoints.problem(sealed) == "holds NaN or infinite values in its optimizer state (state.0.exp_avg)"
    assert checkpoints.problem(sealed, ["model"]) is None  # a model-only load never reads the moments


def test_a_load_whose_digests_match_the_finite_record_skips_the_pass(monkeypatch):
    sealed = checkpoints.seal(state())
    passes = []
    real = checkpoints._first_non_finite
    monkeypatch.setattr(checkpoints, "_first_non_finite", lambda obj, prefix="": passes.append(1) or real(obj, prefix))
    assert checkpoints.problem(sealed) is None
    assert passes == []


@pytest.mark.parametrize("record", [{"model": False}, {}, None, "yes", {"model": 1}])
def test_a_changed_finite_record_does_not_match(record):
    sealed = checkpoints.seal(state())
    if record is None:
        del sealed["digest"]["finite"]
    else:
        sealed["digest"]["finite"] = record
    assert "the digest of its model weights does not match" in checkpoints.problem(sealed)


def test_an_unknown_scheme_is_refused():
    sealed = checkpoints.seal(state())
    sealed["digest"]["algorithm"] = "md5"
    assert "unreadable" in checkpoints.problem(sealed)


def test_a_scheme_that_is_not_a_name_is_refused():
    sealed = checkpoints.seal(state())
    sealed["digest"]["algorithm"] = ["sha256"]  # a damaged file can hold any value there
    assert "unreadable" in checkpoints.problem(sealed)
