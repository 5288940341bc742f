"""docs/architecture.md is true: every module, file, function, class and method it names exists,
and where its table of jobs names the files that use an implementation, those files use it."""
import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "architecture.md"
PACKAGE = REPO / "aevb"

# classes the page names without their module
CLASSES = {"VAE": "aevb.model", "Run": "aevb.runs", "Split": "aevb.data.base", "Likelihood": "aevb.distributions",
           "LatentStack": "aevb.latent", "LatentCell": "aevb.latent", "Trainer": "aevb.training.loop",
           "Callback": "aevb.training.callbacks", "RunLifecycle": "aevb.training.session"}
# names of files a run writes (not code)
RUN_FILES = (".json", ".jsonl", ".csv", ".pt", ".png", ".html", ".safetensors", ".onnx")


def backticked(text: str):
    return re.findall(r"`([^`\n]+)`", text)


# modules whose names the page gives bare (constants, the data set class)
BARE_FROM = ("aevb.config", "aevb.distributions", "aevb.data", "aevb.training.callbacks", "aevb.training.loggers")
SECTIONS = ("data", "model", "objective", "optim", "train")


def resolve(name: str):
    """The object a dotted name of the page names (a module of aevb, then attributes; a setting
    ``section.field``; ``run.method`` of a Run), or None."""
    parts = name.split(".")
    if parts[0] in SECTIONS and len(parts) == 2:
        from aevb.config import RunConfig

        return getattr(getattr(RunConfig(), parts[0]), parts[1], None) if hasattr(RunConfig(), parts[0]) else None
    if parts[0] == "run":
        parts[0] = "Run"
    if parts[0] in CLASSES:
        obj = getattr(importlib.import_module(CLASSES[parts[0]]), parts[0])
        rest = parts[1:]
    else:
        if parts[0] == "aevb":
            parts = parts[1:]
        obj, rest = importlib.import_module("aevb"), list(parts)
        while rest:  # the longest module prefix, then attributes
            try:
                obj = importlib.import_module(obj.__name__ + "." + rest[0])
                rest.pop(0)
            except (ModuleNotFoundError, AttributeError):
                break
    for attr in rest:
        if not hasattr(obj, attr):
            return None
        obj = getattr(obj, attr)
    return obj


def code_names(tokens):
    """(paths, dotted names, bare names) among backticked tokens that name code."""
    paths, dotted, bare = [], [], []
    for t in tokens:
        t = t.strip()
        if re.fullmatch(r"[\w/]+(\.py|/)", t):
            paths.append(t)
        elif re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", t) and not t.endswith(RUN_FILES):
            if not t.startswith(("nn.", "torch.")):  # PyTorch's names
                dotted.append(t)
        elif re.fullmatch(r"[A-Z][A-Za-z_]+", t):
            bare.append(t)
    return paths, dotted, bare


def test_every_module_and_name_the_page_gives_exists():
    paths, dotted, bare = code_names(backticked(PAGE.read_text()))
    assert len(paths) > 30 and len(dotted) > 30  # the page is read (a regex that finds nothing proves nothing)
    missing = [p for p in paths if not (PACKAGE / p).exists() and not (REPO / p).exists()]
    missing += [d for d in dotted if resolve(d) is None]
    known = set(CLASSES) | {n for m in BARE_FROM for n in dir(importlib.import_module(m))}
    missing += [b for b in bare if b not in known]
    assert not missing, f"docs/architecture.md names what the code does not have: {sorted(set(missing))}"


def job_rows():
    """(implementation tokens, users tokens) of each row of the table of jobs."""
    text = PAGE.read_text()
    table = text[text.index("## One implementation per job"):text.index("## The path of one batch")]
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) == 3 and not set(cells[0]) <= set("- "):
            yield backticked(cells[1]), backticked(cells[2])


def test_the_files_the_table_says_use_an_implementation_use_it():
    checked = 0
    for where, users in job_rows():
        _, dotted, _ = code_names(where)
        names = {d.split(".")[-1] for d in dotted} | {Path(p).stem for p in code_names(where)[0]}
        for user in code_names(users)[0]:
            path = PACKAGE / user
            if not path.is_file():
                continue
            text = path.read_text()
            assert any(n in text for n in names), f"{user} does not use any of {sorted(names)}"
            checked += 1
    assert checked >= 1


def test_the_resolver_finds_missing_names():
    """The checks above can fail: a name that is not there is found missing."""
    assert resolve("bounds.active_mask") is not None and resolve("VAE.log_weights") is not None
    assert resolve("bounds.no_such_function") is None and resolve("VAE.no_such_method") is None
    assert code_names(["training/loop.py", "VAE.encode", "metrics.csv", "aevb train"]) == (
        ["training/loop.py"], ["VAE.encode"], [])


@pytest.mark.parametrize("name", ["LatentStack.sample", "VAE.log_weights", "bounds.chunk_log_weights"])
def test_the_importance_weight_is_made_where_the_page_says(name):
    """The page's claim that one function makes every importance weight: the engine and the
    training bounds both call VAE.log_weights, and nothing else calls the latent cells' sampler."""
    import inspect

    import aevb.bounds
    import aevb.model

    assert resolve(name) is not None
    engine = inspect.getsource(aevb.bounds.chunk_log_weights)
    assert "model.log_weights(" in engine
    for method in ("elbo", "iwae", "log_importance_weights"):
        assert "self.log_weights(" in inspect.getsource(getattr(aevb.model.VAE, method))
    callers = [p for p in PACKAGE.rglob("*.py") if "latent.sample(" in p.read_text()]
    assert [p.relative_to(PACKAGE).as_posix() for p in callers] == ["model.py"]
