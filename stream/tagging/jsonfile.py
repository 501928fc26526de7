"""Reading a JSON or text file of the bundle or the command line, failing with one line that names it."""

from __future__ import annotations

from pathlib import Path

import orjson


def read_json(path: str | Path, error: type[Exception]) -> object:
    """The parsed file, or ``error("<path>: cannot read (...)" / "<path>: not JSON (...)")``."""
    path = Path(path)
    try:
        return orjson.loads(path.read_bytes())
    except OSError as err:
        raise error(f"{path}: cannot read ({err.strerror or err})") from None
    except orjson.JSONDecodeError as err:
        raise error(f"{path}: not JSON ({err})") from None


def read_lines(path: str | Path, error: type[Exception]) -> list[str]:
    """The file's lines (UTF-8), or ``error("<path>: cannot read (...)" / "<path>: not UTF-8 text (...)")``."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise error(f"{path}: cannot read ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise error(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
