"""Configuration files in TOML, read strictly: every section and key known, every value of its
type and range, defaults filled in; a `SettingsError` names the file and the line."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# section -> key -> (type(s), default); a None default: required
Schema = dict[str, dict[str, tuple[type | tuple[type, ...], Any]]]


class SettingsError(Exception):
    """A configuration that cannot be used; the message names the file and line."""


def _line_of(text: str, section: str, key: str | None) -> int:
    """The line where `key` of `[section]` is set (or the section starts), 1-based; 0 if
    not found."""
    current = ""
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        m = re.fullmatch(r"\[\s*([A-Za-z0-9_.-]+)\s*\]\s*(#.*)?", stripped)
        if m:
            current = m.group(1)
            if key is None and current == section:
                return n
            continue
        if current == section and key is not None and re.match(
                rf"{re.escape(key)}\s*=", stripped):
            return n
    return 0


def read(path: Path, schema: Schema, ranges: dict[str, tuple[float, float]],
         always: Iterable[str] = ()) -> tuple[dict[str, dict[str, Any]],
                                              Callable[..., str]]:
    """The file's values by section (sections in `always` present even when absent, with
    their defaults), and `where(section, key=None)`: "FILE:LINE" for messages."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read it: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{path}: not UTF-8 text") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not TOML: {exc}") from None

    def where(section: str, key: str | None = None) -> str:
        line = _line_of(text, section, key)
        return f"{path}:{line}" if line else str(path)

    values: dict[str, dict[str, Any]] = {}
    for section, body in doc.items():
        if section not in schema:
            raise SettingsError(f"{where(section)}: unknown section [{section}] (known:"
                                f" {', '.join(schema)})")
        if not isinstance(body, dict):
            raise SettingsError(f"{where(section, section)}: {section} must be a [section]")
        values[section] = {}
        for key, value in body.items():
            if key not in schema[section]:
                raise SettingsError(f"{where(section, key)}: unknown key {key!r} in"
                                    f" [{section}] (known: {', '.join(schema[section])})")
            kind = schema[section][key][0]
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
                names = kind.__name__ if isinstance(kind, type) else " or ".join(
                    k.__name__ for k in kind)
                raise SettingsError(f"{where(section, key)}: {key} must be {names}, not"
                                    f" {type(value).__name__} {value!r}")
            if isinstance(value, list) and not all(isinstance(v, str) for v in value):
                raise SettingsError(f"{where(section, key)}: {key} must be a list of strings")
            if key in ranges and isinstance(value, int | float) and not (
                    ranges[key][0] <= value <= ranges[key][1]):
                lo, hi = ranges[key]
                raise SettingsError(f"{where(section, key)}: {key} = {value} is not"
                                    f" within {lo}..{hi}")
            values[section][key] = value
    for section in always:
        values.setdefault(section, {})
    for section, keys in schema.items():
        if section not in values:
            continue
        for key, (_, default) in keys.items():
            if key not in values[section]:
                if default is None:
                    raise SettingsError(f"{where(section)}: [{section}] needs {key}")
                values[section][key] = default
    return values, where
