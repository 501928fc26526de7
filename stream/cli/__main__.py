"""`python -m stream.cli`: the `tagstream` command."""

from stream.cli import entrypoint

entrypoint()
