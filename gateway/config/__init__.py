"""Configuration: TOML files loaded into pydantic models, with environment overrides and cross-field checks."""

from gateway.config.loader import LoadedConfig, load_config
from gateway.config.root import GatewaySettings

__all__ = ["GatewaySettings", "LoadedConfig", "load_config"]
