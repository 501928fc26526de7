"""What every verb group shares: the one-line error, the parser that builds a verb's options only
when that verb is chosen, the training-extra check, settings from flags, JSON in and out."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, NoReturn

TRAIN_MODULES = {"torch", "transformers", "torchcrf", "onnx", "onnxscript"}


class CliError(Exception):
    """An expected failure: printed as one line, exit status 1."""


class Parser(argparse.ArgumentParser):
    """One-line errors; ``build(parser)`` adds the options on first use, so a verb's imports (a
    config from model/, the service) happen only when that verb is chosen, and `tagstream --help`
    imports none of them."""

    def __init__(self, *args, build: Callable[["Parser"], None] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._build = build

    def error(self, message: str) -> NoReturn:
        # One line, not a usage block: the user asked for `--help` if they want that.
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        if self._build is not None:
            build, self._build = self._build, None
            build(self)
        return super().parse_known_args(args, namespace)


def verb(verbs, name: str, help: str, build: Callable[[Parser], None], run: Callable[[argparse.Namespace], int],
         **kwargs) -> Parser:
    """A verb (or a taxonomy/drift action) whose options ``build`` adds when it is chosen."""
    p = verbs.add_parser(name, help=help, description=kwargs.pop("description", help), build=build, **kwargs)
    p.set_defaults(run=run)
    return p


def needs_training_extra(verb: str) -> None:
    """Import the training side, or explain the missing extra in one line."""
    try:
        import model.train  # noqa: F401  (torch, transformers, pytorch-crf)
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] in TRAIN_MODULES:
            raise CliError(f"`tagstream {verb}` needs the training extra ({err.name} is not installed): "
                           f"pip install 'tagstream[train]'") from None
        raise


def settings_options(p, only=None) -> None:
    """The worker settings as options (all, or those in ``only``); flags beat TAGSTREAM_* variables."""
    from stream.cli.options import add_options
    from stream.service.settings import Settings

    add_options(p, Settings, only, env=Settings.env_name)


def settings_from(args: argparse.Namespace):
    from stream.cli.options import given
    from stream.service.settings import Settings

    return Settings.from_env(**given(args, Settings))


def json_lines(path: str) -> list[dict]:
    import orjson

    out = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").split("\n"), 1):
        if line.strip():
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError as err:
                raise CliError(f"{path}:{number}: not JSON ({err})") from None
    return out


def write_json(path: str, data) -> None:
    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    if path == "-":
        sys.stdout.write(text)
    else:
        Path(path).write_text(text, encoding="utf-8")
