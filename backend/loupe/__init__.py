"""Loupe: a self-hosted interpretability workbench."""

__version__ = "0.1.0"
