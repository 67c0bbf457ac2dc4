"""`python -m loupe.cli` = `loupe`."""

from loupe.cli import app

app()
