"""Steering: vectors (stored, imported, exported), interventions -> hook plans, the refusal
direction (Arditi et al. 2024), the evaluation sweep, live editing, and the build step."""
