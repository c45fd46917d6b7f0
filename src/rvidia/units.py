"""Durations and sizes as operators write them: ``7d``, ``12h``, ``90s``, ``3600``; ``1GiB``, ``500M``."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhdw]?)\s*$", re.IGNORECASE)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?)(b?)\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_duration(value: str | int | float) -> float:
    """Seconds from a number or ``<number><s|m|h|d|w>``; ValueError with the value otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration (e.g. 3600, 90s, 30m, 12h, 7d, 2w)")
        seconds = float(match.group(1)) * _SECONDS[match.group(2).lower()]
    if seconds < 0:
        raise ValueError(f"{value!r} is a negative duration")
    return seconds


def parse_size(value: str | int | float) -> int:
    """Bytes from a number or ``<number><K|M|G|T>[i][B]`` (K = 1024 either way, as df shows)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        size = float(value)
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a size (e.g. 1073741824, 500M, 1GiB)")
        size = float(match.group(1)) * 1024 ** _POWERS[match.group(2).lower()]
    if size < 0:
        raise ValueError(f"{value!r} is a negative size")
    return int(size)


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
