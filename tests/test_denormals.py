"""Denormal numbers are flushed to zero in every thread while aevb trains or a command runs, and
the mode is as it was afterwards (aevb.denormals)."""
import pytest
import torch

from aevb import denormals
from conftest import tiny_config

TINY = 1e-39  # a float32 denormal


@pytest.fixture
def ftz_cpu():
    """Skip where the processor has no flush-to-zero mode; the mode off before and after."""
    if not torch.set_flush_denormal(True):
        pytest.skip("this processor has no flush-to-zero mode")
    torch.set_flush_denormal(False)
    yield
    denormals.set_flush(False)


def zero_share(x: torch.Tensor) -> float:
    """The share of x * 0.5 that comes out 0: x holds denormals only, so 0 where they are kept
    and 1 where every thread that took a part of the product flushes them."""
    return float((x * 0.5 == 0).float().mean())


def test_flushed_reaches_every_thread_and_gives_the_mode_back(ftz_cpu):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        x = torch.full((4_000_000,), TINY)  # split among both threads
        assert zero_share(x) == 0.0 and not denormals.flushing()
        with denormals.flushed() as on:
            assert on and denormals.flushing()
            # the pool's second thread flushes too: the calling thread alone would give 0.5
            assert zero_share(x) == 1.0
        assert zero_share(x) == 0.0 and not denormals.flushing()
    finally:
        torch.set_num_threads(before)


def test_a_caller_that_flushes_keeps_flushing(ftz_cpu):
    torch.set_flush_denormal(True)
    with denormals.flushed():
        assert denormals.flushing()
    assert denormals.flushing()


def test_flushing_reads_the_calling_threads_mode(ftz_cpu):
    assert not denormals.flushing()
    assert denormals.set_flush(True) and denormals.flushing()
    assert torch.tensor([TINY]).mul_(1.0)[0] == 0
    assert denormals.set_flush(False) and not denormals.flushing()
    assert torch.tensor([TINY]).mul_(1.0)[0] > 0


def test_training_flushes_and_a_command_gives_the_mode_back(tmp_path, ftz_cpu, one_thread):
    from aevb.cli import main
    from aevb.training import Trainer
    from aevb.training.callbacks import Callback

    class Mode(Callback):
        seen = []

        def on_train_batch_end(self, trainer, outputs, batch):
            self.seen.append(denormals.flushing())

    trainer = Trainer.new(tiny_config(train={"epochs": 1}), tmp_path / "run", callbacks=[Mode()])
    trainer.fit()
    assert Mode.seen and all(Mode.seen)
    assert not denormals.flushing()
    assert main(["sample", str(tmp_path / "run"), "--out", str(tmp_path / "s.png")]) == 0
    assert not denormals.flushing()
