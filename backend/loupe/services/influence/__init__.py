"""Influence functions (Grosse, Bae, Anil et al. 2023): EK-FAC factors with kronfluence, a compact
cache of preconditioned training gradients, queries over it, and their evaluation."""
