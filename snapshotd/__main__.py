"""`python -m snapshotd`: the same as the snapshotd command."""
from .cli import run

run()
