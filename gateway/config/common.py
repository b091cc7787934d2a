"""Shared pieces of the configuration models: strict base, names, ranges and file paths."""

from __future__ import annotations

import contextvars
import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr

#: The directory relative paths in the configuration are resolved against (the config file's own directory).
BASE_DIR: contextvars.ContextVar[Path | None] = contextvars.ContextVar("config_base_dir", default=None)

_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}")


class StrictModel(BaseModel):
    """Every configuration section: unknown keys are errors (a typo must not silently fall back to a default)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def expand_vars(text: str) -> str:
    """Expand ``${NAME}`` and ``${NAME:-default}``; an unset variable without a default is an error."""

    def _sub(match: re.Match[str]) -> str:
        name, default = match.group("name"), match.group("default")
        value = os.environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                raise ValueError(f"environment variable {name} is not set")
            return default
        return value

    return _VAR.sub(_sub, text)


def _to_path(value: object) -> object:
    if not isinstance(value, str | Path):
        return value
    path = Path(expand_vars(str(value))).expanduser()
    base = BASE_DIR.get()
    if not path.is_absolute() and base is not None:
        path = base / path
    return Path(os.path.normpath(path))


def _must_exist(path: Path) -> Path:
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    return path


#: A file or directory path: ``${VAR}`` expanded, relative paths taken from the config file's directory.
ConfigPath = Annotated[Path, BeforeValidator(_to_path)]
#: A path to a file that must exist when the configuration is loaded (certificates, keys, CA bundles).
ExistingFile = Annotated[Path, BeforeValidator(_to_path), AfterValidator(_must_exist)]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$"
#: Tag and device names: letters, digits and ``_ . : -``, so that they are safe in topics, metrics and file names.
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
#: A tag name referenced from elsewhere in the configuration (checked against the configured tags at load time).
TagRef = Annotated[str, Field(pattern=NAME_PATTERN)]

Port = Annotated[int, Field(ge=1, le=65535)]
ListenPort = Annotated[int, Field(ge=0, le=65535)]
PositiveSeconds = Annotated[float, Field(gt=0)]


def read_secret(value: SecretStr | None, file: Path | None) -> str | None:
    """A secret given inline or, preferably, in a file (systemd ``LoadCredential``, a mounted secret)."""
    if file is not None:
        return file.read_text(encoding="utf-8").strip()
    return value.get_secret_value() if value is not None else None
