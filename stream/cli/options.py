"""Command-line options derived from a config dataclass (as HfArgumentParser does): the flag, its
default, help, choices, type and accepted range all come from the field, so no option is written twice.

Field metadata read here: ``help``; ``choices``; ``minimum`` (inclusive), ``above`` and ``below``
(exclusive) bounds of a number; ``metavar``; ``required`` (on the command line, although the field
has a default). A field without a default is required. ``tuple[str, ...]`` fields are repeatable
(``--x A B --x C``); booleans are switches (``negatable``, or a default of True: with a ``--no-`` form).
``cli=False``: not an option at all.
"""

from __future__ import annotations

import argparse
import types
import typing
from dataclasses import MISSING, Field, fields
from typing import Any, Callable, Collection


def number(kind: type, *, minimum: float | None = None, above: float | None = None,
           below: float | None = None) -> Callable[[str], Any]:
    """An argparse type: parse as ``kind``, then refuse values outside the bounds in one line."""
    wanted = _wanted(kind, minimum, above, below)

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if ((minimum is not None and value < minimum) or (above is not None and value <= above)
                or (below is not None and value >= below)):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {value}")
        return value
    parse.__name__ = wanted  # argparse names the type in its messages
    return parse


def _wanted(kind: type, minimum, above, below) -> str:
    noun = "integer" if kind is int else "number"
    article = "an" if kind is int else "a"
    if below is not None and (minimum is not None or above is not None):
        low = f"[{minimum}" if minimum is not None else f"({above}"
        return f"a number in {low}, {below})"
    if below is not None:
        return f"{article} {noun} below {below}"
    if above == 0:
        return f"a positive {noun}"
    if above is not None:
        return f"{article} {noun} above {above}"
    if minimum is not None:
        return f"{article} {noun} of at least {minimum}"
    return f"{article} {noun}"


positive_int = number(int, above=0)
positive_float = number(float, above=0)


def add_options(parser, config: type, names: Collection[str] | None = None, *, skip: Collection[str] = (),
                required: Collection[str] = (), env: Callable[[str], str] | None = None) -> None:
    """One ``--field-name`` option per field of ``config`` (those in ``names``, none in ``skip``),
    on a parser or an argument group.

    With ``env`` (a field name -> environment variable), values stay strings and default to None:
    the config layers them over its environment and defaults itself (``Settings.from_env``).
    Otherwise each option parses to the field's type and defaults to the field's default."""
    hints = typing.get_type_hints(config)
    for f in fields(config):
        if (names is not None and f.name not in names) or f.name in skip or f.metadata.get("cli") is False:
            continue
        options = _layered(f, env) if env else _typed(f, hints[f.name], f.name in required)
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, **options)


def from_args(args: argparse.Namespace, config: type, *, skip: Collection[str] = (), **values: Any):
    """``config`` built from the options ``add_options`` gave it (``values`` win)."""
    given = {f.name: _value(getattr(args, f.name)) for f in fields(config)
             if f.name not in skip and hasattr(args, f.name)}
    return config(**{**given, **values})


def given(args: argparse.Namespace, config: type) -> dict[str, Any]:
    """The layered (``env``) options of ``config`` that were set on the command line."""
    return {f.name: getattr(args, f.name) for f in fields(config) if getattr(args, f.name, None) is not None}


def _value(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _help(text: str) -> str:
    return text.replace("%", "%%")  # argparse %-formats help


def _layered(f: Field, env: Callable[[str], str]) -> dict:
    return {"default": None, "metavar": "VALUE",
            "help": _help(f"{f.metadata.get('help', '')} (${env(f.name)}, default {f.default!r})")}


def _typed(f: Field, hint: Any, required: bool) -> dict:
    meta = f.metadata
    kind, repeated = _kind(hint)
    required = required or bool(meta.get("required")) or (f.default is MISSING and f.default_factory is MISSING)
    default = None if f.default is MISSING else f.default
    text = meta.get("help", "")
    if not required and not _unset(default):
        text += f" (default {default})"
    options: dict[str, Any] = {"help": _help(text)}
    if kind is bool:
        options["action"] = argparse.BooleanOptionalAction if default or meta.get("negatable") else "store_true"
    else:
        options["type"] = (number(kind, minimum=meta.get("minimum"), above=meta.get("above"), below=meta.get("below"))
                           if kind in (int, float) else kind)
        if meta.get("choices"):
            options["choices"] = meta["choices"]
        if meta.get("metavar"):
            options["metavar"] = meta["metavar"]
    if repeated:
        options.update(action="extend", nargs="+")
        default = list(default or ())  # argparse extends a copy of a list default
    if required:
        options["required"] = True
    else:
        options["default"] = default
    return options


def _unset(default: Any) -> bool:
    return default is None or default is False or default == () or default == ""


def _kind(hint: Any) -> tuple[type, bool]:
    """(the type one value parses to, whether the option repeats) of a field's type hint."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], True
    return hint, False
