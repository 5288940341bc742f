"""Typed run configuration, saved (resolved) as ``config.json`` in every run folder.

Precedence when a run is configured: defaults < preset < config file (YAML or JSON) < command
line. ``None`` in a few fields means "choose from the data set" and is filled by ``resolve``.
``settings.py`` declares the sections and the valid values of every setting, ``rules.py`` checks
a whole configuration, ``files.py`` reads config files.
"""
from ..errors import ConfigError
from .files import load_config_file
from .rules import apply_preset, diff, resolve, validate
from .settings import (CHOICES, RANGES, SECTIONS, DataConfig, ModelConfig, ObjectiveConfig, OptimConfig, RunConfig,
                       TrainConfig, check_value, choices, field_names, get_setting, merge, merge_keywords,
                       set_setting,
                       source_of, to_jsonable)

__all__ = ["ConfigError", "load_config_file", "apply_preset", "diff", "resolve", "validate", "CHOICES", "RANGES",
           "SECTIONS", "DataConfig", "ModelConfig", "ObjectiveConfig", "OptimConfig", "RunConfig", "TrainConfig",
           "check_value", "choices", "field_names", "get_setting", "merge", "merge_keywords", "set_setting", "source_of", "to_jsonable"]
