"""The digests that seal checkpoints: chunked SHA-256 of large tensors, and the earlier scheme."""
import hashlib

import pytest
import torch

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
    assert sealed["digest"]["algorithm"] == "sha256-chunks"
    assert checkpoints.problem(sealed) is None
    flat = sealed["model"]["w"].view(-1).view(torch.uint8)
    for i in (0, 63, 64, 700, len(flat) - 1):  # first, last of a chunk, first of the next, inside, the end
        damaged = {**sealed, "model": {k: v.clone() for k, v in sealed["model"].items()}}
        damaged["model"]["w"].view(-1).view(torch.uint8)[i] ^= 1
        assert "does not match" in checkpoints.problem(damaged), i


def test_chunk_digests_are_sha256_of_each_chunk_in_order(small_chunks):
    data = torch.arange(300, dtype=torch.uint8).numpy()
    want = b"".join(hashlib.sha256(data[i:i + 64]).digest() for i in range(0, 300, 64))
    before = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)  # the same digest on one thread and on several
            assert checkpoints._chunk_digests(data) == want
    finally:
        torch.set_num_threads(before)


def test_chunks_and_one_pass_differ_but_both_load(small_chunks):
    s = state()
    chunked = checkpoints.entry_digest(s["model"], "sha256-chunks")
    whole = checkpoints.entry_digest(s["model"], "sha256")
    assert chunked != whole  # a checkpoint cannot pass under the other scheme by accident
    earlier = {**s, "digest": {"algorithm": "sha256",  # as an earlier version sealed it
                               "entries": {k: checkpoints.entry_digest(v, "sha256") for k, v in s.items()}}}
    assert checkpoints.problem(earlier) is None
    earlier["model"]["b"][0] += 1
    assert "does not match" in checkpoints.problem(earlier)


def test_an_unknown_scheme_is_refused():
    sealed = checkpoints.seal(state())
    sealed["digest"]["algorithm"] = "md5"
    assert "unreadable" in checkpoints.problem(sealed)


def test_a_scheme_that_is_not_a_name_is_refused():
    sealed = checkpoints.seal(state())
    sealed["digest"]["algorithm"] = ["sha256"]  # a damaged file can hold any value there
    assert "unreadable" in checkpoints.problem(sealed)
