"""Configuration: YAML files with line marks, the JSON Schema, secrets and the typed model."""

from sealdump.config.model import Config
from sealdump.config.validate import DEFAULT_CONFIG, load_config

__all__ = ["DEFAULT_CONFIG", "Config", "load_config"]
