"""Errors of the fd kinds; dump/ and restore/ turn them into their own."""


class Unsupported(Exception):
    """Dump: an fd snapshotd cannot snapshot exactly; the message names it."""


class Failed(Exception):
    """Restore: an fd could not be rebuilt; the message says which and why."""
