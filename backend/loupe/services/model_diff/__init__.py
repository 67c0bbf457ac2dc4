"""Model diffing: what changed between a fine-tuned model and its parent (service.py: the job and its
artifact; refusal.py: the refusal directions compared; figures.py: its plotly figures)."""

from loupe.services.model_diff.figures import diff_figures
from loupe.services.model_diff.service import DiffConfig, ModelDiffService

__all__ = ["DiffConfig", "ModelDiffService", "diff_figures"]
