"""The `tagstream` command: the top-level parser and error handling. Each verb group lives in its
own module (data, training, serving, taxonomy) and builds its options only when chosen; the training
verbs import model/ and export/ lazily, so a serving install without PyTorch still starts and says
what to install instead of failing on an import."""

from __future__ import annotations

import os
import sys
from typing import NoReturn, Sequence

from stream.cli.common import CliError, Parser
from stream.cli.data import add_verbs as data_verbs
from stream.cli.labels import add_verbs as label_verbs
from stream.cli.review import add_verbs as review_verbs
from stream.cli.serving import add_verbs as serving_verbs
from stream.cli.taxonomy import add_verbs as taxonomy_verbs
from stream.cli.training import add_verbs as training_verbs

__all__ = ["CliError", "build_parser", "main", "entrypoint"]


def build_parser() -> Parser:
    parser = Parser(prog="tagstream", description="Real-time product tagging: train, export, serve.")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser)
    verbs.required = True
    for add_verbs in (data_verbs, label_verbs, training_verbs, serving_verbs, taxonomy_verbs, review_verbs):
        add_verbs(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.run(args)
    except KeyboardInterrupt:
        print("tagstream: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except (CliError, ValueError, OSError) as err:
        if os.environ.get("TAGSTREAM_DEBUG"):
            raise
        # DataError and SchemeError are ValueErrors: their message already says file, line and what.
        text = str(err) if not isinstance(err, OSError) or not err.filename else f"{err.filename}: {err.strerror}"
        print(f"tagstream: error: {text}", file=sys.stderr)
        return 1


def entrypoint() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
