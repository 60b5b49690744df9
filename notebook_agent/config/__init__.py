"""Configuration: clearml.conf (HOCON) + environment -> a typed Config; pasted credentials -> clearml.conf.

Keys and variable names are clearml-agent's, so an existing clearml.conf and CLEARML_* environment work as is.
"""

from .errors import ConfigError
from .loader import config_path, load_config
from .model import ApiConfig, Config, Credentials
from .paste import PastedCredentials, parse_pasted
from .writer import WriteResult, ensure_agent_section, write_credentials

__all__ = [
    "ApiConfig",
    "Config",
    "ConfigError",
    "Credentials",
    "PastedCredentials",
    "WriteResult",
    "config_path",
    "ensure_agent_section",
    "load_config",
    "parse_pasted",
    "write_credentials",
]
