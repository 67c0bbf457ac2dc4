"""Sparse autoencoders: configs, training, evaluation, dashboards and feature pages, the registry
(every SAE of the workspace), the feature-reading service, and the build steps of the analysis."""
