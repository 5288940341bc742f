"""Every code block of docs/python-api.md runs, in order, as a user would paste them."""
import re
from pathlib import Path

import torch

PAGE = Path(__file__).resolve().parent.parent / "docs" / "python-api.md"


def python_blocks(text: str):
    return re.findall(r"^```python\n(.*?)^```", text, re.M | re.S)


def test_the_python_api_page_runs_as_written(tmp_path, monkeypatch, one_thread):
    blocks = python_blocks(PAGE.read_text())
    assert len(blocks) >= 8  # the page's tutorial: tensor, module, loop, sizing, Dataset, modules, saving, resume
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    namespace: dict = {"__name__": "__docs__"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"{PAGE.name}, block {i + 1}", "exec"), namespace)
        except Exception as e:  # name the block that failed
            raise AssertionError(f"block {i + 1} of {PAGE.name} failed: {type(e).__name__}: {e}\n{block}") from e
    # what the page says it made
    assert (tmp_path / "runs" / "my-digits" / "report.html").is_file()
    assert (tmp_path / "my-vae" / "model.safetensors").is_file()
    # the report of a run of your own modules says so, not the default networks' sizes
    assert "your own encoder and decoder modules" in (tmp_path / "runs" / "my-modules" / "report.html").read_text()
    assert namespace["run"].metrics()[-1]["epoch"] == 4
    assert len(namespace["steps"].losses) > 0


def test_the_block_finder_finds_blocks():
    """The check above can fail: a page with two blocks gives two."""
    assert python_blocks("a\n```python\nx = 1\n```\ntext\n```python\ny = 2\n```\n") == ["x = 1\n", "y = 2\n"]
