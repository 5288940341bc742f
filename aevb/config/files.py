"""Config files: YAML (1.2 numbers) or JSON, read into the nested dict that ``merge`` applies."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Union

import yaml

from ..errors import ConfigError
from .settings import _describe


class _YamlLoader(yaml.SafeLoader):
    """YAML 1.2 numbers: PyYAML reads 1e-3 (no dot) as a string; here it is the number it looks like."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def load_config_file(path: Union[str, Path]) -> dict:
    """Read a YAML (.yaml/.yml) or JSON config file into a nested dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist" if not path.exists() else
                          f"config file {path} is not a file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} could not be read ({e}); give a YAML or JSON text file") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            d = yaml.load(text, Loader=_YamlLoader) or {}
        else:
            d = json.loads(text)
    except Exception as e:  # yaml.YAMLError, json.JSONDecodeError
        detail = " ".join(str(e).split())
        raise ConfigError(f"config file {path} could not be parsed: {detail}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {_describe(d)}")
    return d
