"""Jacobians: training-Jacobian runs (Belrose & Scherlis 2024) and per-token layer Jacobians of a
language model."""
