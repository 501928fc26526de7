"""Serving side of tagstream: torch-free tagging, the streaming worker and the CLI."""
