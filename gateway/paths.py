"""Where the bundled configuration lives: ``config/`` in a source checkout, packaged data in a wheel."""

from __future__ import annotations

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
