"""Where the bundled configuration lives: ``config/`` in a source checkout, packaged data in a wheel; where the OPC UA
certificates live beside a configuration."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def bundled_config_dir() -> Path:
    """The directory holding the default configuration, the point map and the simulator's plant file."""
    for candidate in (_PACKAGE.parent / "config", _PACKAGE / "_bundled_config"):
        if (candidate / "gateway.toml").is_file():
            return candidate
    raise FileNotFoundError("bundled configuration not found (neither config/ nor gateway/_bundled_config/)")


def default_config_path() -> Path:
    return bundled_config_dir() / "gateway.toml"


def pki_dir(config_file: Path) -> Path:
    """The OPC UA certificates' directory: ``pki/`` in systemd's ``$CONFIGURATION_DIRECTORY`` when set
    (``/etc/water-gateway/pki``), else ``pki/`` beside the configuration file."""
    configured = os.environ.get("CONFIGURATION_DIRECTORY")
    if configured:
        return Path(configured.split(":")[0]) / "pki"
    return config_file.resolve().parent / "pki"
