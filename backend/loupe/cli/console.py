"""The one rich console the CLI prints through, and its progress bars."""

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console()


def progress_bars(label: str = "{task.description:<22}") -> Progress:
    """Bars with a bold label, done/total, the elapsed time and the job's latest message."""
    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[message]}"),
        console=console,
    )
