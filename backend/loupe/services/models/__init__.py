"""Models: the registry (ids -> loaded TransformerBridge models), loading, and locked forward passes."""

from loupe.services.models.forward import attached_hooks, decoding_forward, fired_hooks, hook_shapes, locked_forward
from loupe.services.models.loading import describe, load_bridge, load_hf_model
from loupe.services.models.registry import LoadedModel, ModelService

__all__ = [
    "LoadedModel",
    "ModelService",
    "attached_hooks",
    "decoding_forward",
    "describe",
    "fired_hooks",
    "hook_shapes",
    "load_bridge",
    "load_hf_model",
    "locked_forward",
]
