"""The one rich console the CLI prints through."""

from rich.console import Console

console = Console()
