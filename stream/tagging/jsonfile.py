"""Reading a JSON file of the bundle or the command line, failing with one line that names it."""

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
