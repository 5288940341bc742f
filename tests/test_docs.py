"""The documentation cannot drift from the code.

README.md and docs/*.md show commands, options, config files and Python code; these tests check
them against aevb itself:

- every `aevb ...` line of a shell code block parses with aevb's own argument parser (also
  behind a prompt, variables or a label, and after `&&`, `;`, a pipe or `-m aevb`);
- every option named in the pages (in code blocks or in backticks in the prose, long or short)
  exists for its command, and a value given for it is of its type and, for an option with fixed
  choices, one of them (UPPERCASE words are placeholders);
- the presets table lists every preset; YAML config examples are valid settings; the Python
  examples import what exists; the API reference lists exactly ``aevb.__all__``;
- the first training command of the getting-started page runs for real (on the embedded digits,
  a few epochs) and writes the files the page lists, and its evaluation command writes the file
  the page names; the Python guide's first example runs;
- ``mkdocs build --strict`` passes (skipped, saying why, when MkDocs is not installed).
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from aevb.cli import build_parser

from helpers import aevb_argv, fenced_blocks, joined, prose

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md"] + sorted(DOCS.glob("*.md"))

SHELL_LANGS = {"bash", "sh", "shell", "console", ""}

# The commands whose options a page's prose names (an option in backticks, not in a full
# `aevb ...` command, must belong to one of them). Pages not listed: any command.
PAGE_COMMANDS = {
    "getting-started.md": ["train", "evaluate", "plot", "report", "explore"],
    "data.md": ["train", "data prepare"],
    "models.md": ["train"],
    "training.md": ["train"],
    "evaluation.md": ["evaluate"],
    "figures-and-report.md": ["plot", "sample", "reconstruct", "report", "train"],
    "explorer.md": ["explore", "train"],
    "export.md": ["export"],
    "reproduction.md": ["reproduce", "train"],
}

# Inline code that runs another program: its options are not aevb's.
OTHER_PROGRAMS = ("python", "pip", "mkdocs", "torchrun", "OMP_NUM_THREADS", "tensorboard", "dd ", "pytest")


# ---------------------------------------------------------------------------------------------
# reading the pages

def shell_commands():
    """(page name, line, argv) for every aevb command in a shell code block."""
    found = []
    for page in PAGES:
        for lang, lines in fenced_blocks(page.read_text()):
            if lang not in SHELL_LANGS:
                continue
            for line in joined(lines):
                for argv in aevb_argv(line):
                    found.append((page.name, line.strip(), argv))
    return found


def all_aevb_lines():
    """(page name, text, argv) for every aevb command anywhere: code blocks of any language
    (usage lines included) and backticked commands in the prose."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for _, lines in fenced_blocks(text):
            for line in joined(lines):
                line = line.strip().lstrip("#").strip()  # commented commands too
                for argv in aevb_argv(line):
                    found.append((page.name, line, argv))
        for span in re.findall(r"`([^`\n]+)`", prose(text)):
            if span.startswith("aevb "):
                found.append((page.name, span, shlex.split(span[len("aevb "):])))
    return found


# ---------------------------------------------------------------------------------------------
# aevb's parsers

PARSER = build_parser()


def subparsers(parser: argparse.ArgumentParser) -> dict:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def command_parsers() -> dict:
    """'train' -> its parser, ..., and 'data prepare' for verbs."""
    out = {}
    for name, p in subparsers(PARSER).items():
        out[name] = p
        for verb, vp in subparsers(p).items():
            out[f"{name} {verb}"] = vp
    return out


COMMANDS = command_parsers()
for _p in [PARSER, *COMMANDS.values()]:
    _p.allow_abbrev = False  # a page must spell an option in full: `--weight` is not `--weights`


def command_of(argv):
    """(command name, its parser, remaining argv) for an argv after `aevb`."""
    if len(argv) >= 2 and f"{argv[0]} {argv[1]}" in COMMANDS:
        return f"{argv[0]} {argv[1]}", COMMANDS[f"{argv[0]} {argv[1]}"], argv[2:]
    if argv and argv[0] in COMMANDS:
        return argv[0], COMMANDS[argv[0]], argv[1:]
    return None, None, argv


def is_placeholder(value: str) -> bool:
    """An UPPERCASE word standing for a value (RUN, K, DATA_DIR/mnist, N1,N2), not a value."""
    return bool(re.match(r"^[A-Z][A-Z0-9_]*(?:$|[/,.])", value))


def check_value(action, value: str):
    """Why ``value`` is not a value of ``action`` (its type or its choices), or None."""
    if is_placeholder(value):
        return None
    if action.choices:
        for v in re.split(r"[|,]", value.strip("[]{}")):  # a|b or {a,b}
            if v not in action.choices:
                return f"{v!r} is not one of {sorted(action.choices)}"
        return None
    if callable(action.type) and "|" not in value:
        try:
            action.type(value)
        except Exception as e:  # argparse turns any of them into a usage error
            return f"{value!r} is not a value it takes ({e})"
    return None


def check_options(parser, tokens, where, command):
    """Every option in tokens (--long or -s) exists in parser, and the values that follow it (as
    many as it takes) are of its type and among its choices, unless UPPERCASE placeholders (`a|b|c`
    or `{a,b,c}` lists several). Returns the problems."""
    problems = []
    actions = parser._option_string_actions
    for i, tok in enumerate(tokens):
        if tok == "--" or not re.match(r"^(--[a-z]|-[a-zA-Z])", tok):
            continue
        opt = tok.split("=", 1)[0]
        if opt not in actions:
            problems.append(f"{where}: `aevb {command}` has no option {opt}")
            continue
        action = actions[opt]
        if "=" in tok:
            values = [tok.split("=", 1)[1]]
        else:
            n = action.nargs if isinstance(action.nargs, int) else (1 if action.nargs in (None, "?") else 0)
            values = [v for v in tokens[i + 1:i + 1 + n] if not re.match(r"^--?[a-zA-Z]", v)]
        for value in values:
            why = check_value(action, value)
            if why:
                problems.append(f"{where}: {opt} {why}")
    return problems


# ---------------------------------------------------------------------------------------------
# (a) every command of a shell block parses

SHELL = shell_commands()


def test_pages_show_commands():
    assert len(SHELL) >= 40, f"only {len(SHELL)} aevb commands found in the pages' shell blocks"
    assert {c for c, _, _ in (command_of(a) for _, _, a in SHELL)} >= {
        "train", "evaluate", "plot", "sample", "reconstruct", "explore", "export", "report", "reproduce",
        "data prepare"}


@pytest.mark.parametrize("page,line,argv", SHELL, ids=[f"{p}:{' '.join(a)[:60]}" for p, _, a in SHELL])
def test_shell_command_parses(page, line, argv):
    if "--help" in argv or "-h" in argv:
        name, _, _ = command_of(argv)
        assert name is not None, f"{page}: `{line}`: no such aevb command"
        return
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = PARSER.parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"{page}: `{line}` does not parse (exit {e.code}): {err.getvalue().strip()}")
    assert getattr(args, "func", None) is not None, f"{page}: `{line}` names no command"


# ---------------------------------------------------------------------------------------------
# (b) options named anywhere in the pages exist

def test_options_in_commands_exist():
    """Options of every aevb command in the pages, usage lines and prose included."""
    problems = []
    for page, text, argv in all_aevb_lines():
        name, parser, rest = command_of(argv)
        if parser is None:
            problems.append(f"{page}: `aevb {' '.join(argv)}`: no such aevb command")
            continue
        tokens = [t.strip("[]") for t in rest]  # usage lines: [--budget tiny|quick|paper]
        problems += check_options(parser, tokens, f"{page}: `{text}`", name)
    assert not problems, "\n".join(problems)


def test_options_in_prose_exist():
    """An option in backticks in the prose (e.g. `--k 5000`) belongs to a command of its page."""
    problems, checked = [], 0
    for page in PAGES:
        names = PAGE_COMMANDS.get(page.name, list(COMMANDS))
        for span in re.findall(r"`([^`\n]+)`", prose(page.read_text())):
            if span.startswith("aevb ") or span.startswith(OTHER_PROGRAMS) or "--" not in span:
                continue
            tokens = span.split()
            if not tokens[0].startswith("--"):
                continue
            checked += 1
            results = [check_options(COMMANDS[n], tokens, f"{page.name}: `{span}`", n) for n in names]
            if all(results):  # no command of the page accepts it
                problems.append(min(results, key=len)[0] + f" (nor any of {', '.join(names)})")
    assert checked >= 50, f"only {checked} options found in the prose"
    assert not problems, "\n".join(problems)


def test_the_checks_find_what_is_wrong():
    """The checks above can fail: an unknown option (long or short), a value of the wrong type or
    outside the choices is found, a placeholder is not; commands are found behind a prompt, a
    variable, a label or a pipe."""
    train, sample = COMMANDS["train"], COMMANDS["sample"]
    fine = ["--epochs", "3", "--likelihood=bernoulli", "--data-dir", "DATA_DIR/mnist"]
    assert check_options(train, fine, "p", "train") == []
    assert check_options(train, ["--epochs", "N", "--lr", "LR"], "p", "train") == []
    for tokens, want in [(["--epoch", "3"], "has no option --epoch"),
                         (["--epochs", "ten"], "--epochs 'ten' is not a value"),
                         (["--likelihood", "poisson"], "--likelihood 'poisson' is not one of"),
                         (["--likelihood=bernoulli|poisson"], "'poisson' is not one of"), (["-q"], "has no option -q")]:
        got = check_options(train, tokens, "p", "train")
        assert len(got) == 1 and want in got[0], (tokens, got)
    assert check_options(sample, ["-n", "64"], "p", "sample") == []
    assert aevb_argv("$ OMP_NUM_THREADS=1 aevb train --epochs 3 | tee log") == [["train", "--epochs", "3"]]
    assert aevb_argv("RUN1: aevb evaluate r && torchrun --nproc-per-node 2 -m aevb train") == [["evaluate", "r"],
                                                                                            ["train"]]
    assert aevb_argv("pip install aevb") == [] and aevb_argv("cd aevb") == []


def test_option_tables_name_every_train_option():
    """docs/training.md's tables name every option of `aevb train`."""
    text = (DOCS / "training.md").read_text()
    named = set(re.findall(r"`(--[a-z][a-z0-9-]*)", text))
    missing = sorted(o for o in COMMANDS["train"]._option_string_actions if o.startswith("--") and
                     o not in named and o != "--help")
    assert not missing, f"docs/training.md does not document: {', '.join(missing)}"


# ---------------------------------------------------------------------------------------------
# presets, config files, Python examples, the API reference

def test_presets_table_lists_every_preset():
    from aevb.presets import PRESETS

    text = (DOCS / "models.md").read_text()
    table = re.findall(r"^\| `([a-z0-9-]+)` \|", text.split("## Presets", 1)[1], flags=re.M)
    assert sorted(table) == sorted(PRESETS), f"presets table {sorted(table)} != aevb's {sorted(PRESETS)}"


def test_yaml_examples_are_valid_settings(tmp_path):
    from aevb.config import RunConfig, load_config_file, merge, validate

    n = 0
    for page in PAGES:
        for lang, lines in fenced_blocks(page.read_text()):
            if lang in ("yaml", "yml"):
                n += 1
                f = tmp_path / f"example{n}.yaml"
                f.write_text("\n".join(lines) + "\n")
                validate(merge(RunConfig(), load_config_file(f), source=f"{page.name} example"))
    assert n >= 1


def python_examples():
    out = []
    for page in PAGES:
        for lang, lines in fenced_blocks(page.read_text()):
            if lang in ("python", "py"):
                out.append((page.name, "\n".join(lines)))
    return out


PY_EXAMPLES = python_examples()


@pytest.mark.parametrize("page,code", PY_EXAMPLES, ids=[f"{p}-{i}" for i, (p, _) in enumerate(PY_EXAMPLES)])
def test_python_example_imports_exist(page, code):
    """Every `from X import a, b` and `import X` of a Python example resolves."""
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{page}: {node.module} has no {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
    # dotted names in the comments, e.g. aevb.trainer.Trainer.new
    for dotted in re.findall(r"\b(aevb(?:\.\w+)+)", code):
        obj, parts = None, dotted.split(".")
        for i in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            for attr in parts[i:]:
                assert hasattr(obj, attr), f"{page}: {dotted} does not exist"
                obj = getattr(obj, attr)
            break


@pytest.mark.slow
def test_python_api_first_example_runs(tmp_path, monkeypatch):
    """The usage guide's first example (the embedded digits, no download) runs as shown."""
    code = next(code for page, code in PY_EXAMPLES if page == "python-api.md")
    assert "digits" in code or "RunConfig()" in code
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AEVB_CACHE", str(tmp_path / "cache"))
    scope = {}
    exec(compile(code, "docs/python-api.md", "exec"), scope)
    from aevb import VAE

    assert isinstance(scope["model"], VAE) and not scope["model"].training
    assert (tmp_path / scope["run"].path / "checkpoints" / "last.pt").is_file()


def test_api_reference_lists_the_public_names():
    import aevb

    text = (DOCS / "python-api.md").read_text()
    block = text.split("::: aevb", 1)[1]
    members = re.findall(r"^\s+- (\w+)\s*$", block, flags=re.M)
    assert sorted(members) == sorted(aevb.__all__), \
        f"docs/python-api.md lists {sorted(members)}; aevb.__all__ is {sorted(aevb.__all__)}"


# ---------------------------------------------------------------------------------------------
# (c) the getting-started page, run for real

def run_aevb(argv, cwd, env):
    return subprocess.run([sys.executable, "-m", "aevb", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_getting_started_runs(tmp_path):
    text = (DOCS / "getting-started.md").read_text()
    commands = [(line, argv) for p, line, argv in SHELL if p == "getting-started.md"]
    train = next(argv for line, argv in commands if argv[:1] == ["train"] and not line.startswith("python"))
    evaluate = next(argv for _, argv in commands if argv[:1] == ["evaluate"])
    assert "--out" in train, "the page's first training command names its run folder"
    run_dir = train[train.index("--out") + 1]

    # the folder listing that follows the training command
    listing = next(lines for lang, lines in fenced_blocks(text) if lines and lines[0].strip() == f"{run_dir}/")
    entries = [line.split()[0] for line in listing[1:] if line.strip()]
    assert len(entries) >= 5

    env = dict(os.environ, AEVB_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    r = run_aevb(train + ["--epochs", "2", "--no-progress"], tmp_path, env)
    assert r.returncode == 0, f"aevb {' '.join(train)} failed:\n{r.stdout}\n{r.stderr}"
    for entry in entries:
        assert (tmp_path / run_dir / entry).exists(), f"the page lists {run_dir}/{entry}, which was not written"

    r = run_aevb(evaluate, tmp_path, env)
    assert r.returncode == 0, f"aevb {' '.join(evaluate)} failed:\n{r.stdout}\n{r.stderr}"
    named = re.findall(rf"`({re.escape(run_dir)}/evaluation[\w-]*\.json)`", text)
    assert named, "the page names the file aevb evaluate writes"
    assert (tmp_path / named[0]).is_file(), f"the page says aevb evaluate writes {named[0]}"


# ---------------------------------------------------------------------------------------------
# (d) the site builds without a warning

def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="MkDocs is not installed (pip install -e \".[docs]\")")
    pytest.importorskip("material", reason="mkdocs-material is not installed (pip install -e \".[docs]\")")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed (pip install -e \".[docs]\")")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
                        "--site-dir", str(tmp_path / "site")], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, f"mkdocs build --strict failed:\n{r.stdout}\n{r.stderr}"
    api = (tmp_path / "site" / "python-api" / "index.html").read_text()
    for name in ("RunConfig", "load_run", "VAE"):
        assert f'id="aevb.{name}"' in api, f"the API reference has no entry for aevb.{name}"
