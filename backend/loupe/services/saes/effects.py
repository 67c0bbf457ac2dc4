"""What an SAE's features do to the model, read from the weights alone: each decoder direction in the
residual stream, the logits it promotes and suppresses, and the MLP neurons a feature reads from and
writes to."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from loupe.core import sae_dashboards as D
from loupe.core.activations import hook_layer

TopBottom = tuple[Tensor, Tensor, Tensor, Tensor]  # D.top_bottom: top ids, top values, bottom ids, bottom values


def hook_site(hook_name: str) -> tuple[int | None, str]:
    """(block index, the name inside the block): `blocks.0.mlp.hook_post` -> (0, "mlp.hook_post")."""
    layer = hook_layer(hook_name)
    return (layer, hook_name.split(".", 2)[2]) if layer is not None else (None, hook_name)


def residual_directions(W_dec: Tensor, hook_name: str, model: Any) -> Tensor | None:
    """Each feature's decoder direction as written to the residual stream (None where the hook is
    not in or directly into the residual stream)."""
    layer, site = hook_site(hook_name)
    if site in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post") or hook_name == "hook_embed":
        return W_dec
    if layer is not None and site in ("mlp.hook_post",):
        W_out: Tensor = model.W_out[layer].detach().float()
        return W_dec @ W_out
    if layer is not None and site in ("hook_mlp_out", "hook_attn_out"):
        return W_dec
    return None


def neuron_loads(sae: Any, hook_name: str, model: Any) -> dict[str, Any] | None:
    """How features connect to MLP neurons: (reads [d_sae, n], writes [d_sae, n], the layer and what
    the units are). MLP-neuron SAEs read and write neurons directly; residual SAEs read from the
    previous layer's neurons (W_out . W_enc) and write to the same layer's MLP neurons (W_dec . W_in),
    the direct path ignoring LayerNorm."""
    layer, site = hook_site(hook_name)
    W_enc = sae.W_enc.detach().float()  # [d_in, d_sae]
    W_dec = sae.W_dec.detach().float()  # [d_sae, d_in]
    if layer is not None and site == "mlp.hook_post":
        return {"reads": W_enc.T, "writes": W_dec, "units": f"blocks.{layer}.mlp.hook_post", "layer": layer}
    if layer is not None and site in ("hook_resid_pre", "hook_resid_mid"):
        n_layers = int(model.cfg.n_layers)
        writes = W_dec @ model.W_in[layer].detach().float() if layer < n_layers else None
        reads = (model.W_out[layer - 1].detach().float() @ W_enc).T if layer > 0 else None
        return {
            "reads": reads,
            "writes": writes,
            "units": f"blocks.{layer}.mlp neurons (writes) / blocks.{layer - 1}.mlp neurons (reads)",
            "layer": layer,
        }
    return None


def logit_effects(W_dec: Tensor, hook_name: str, model: Any, k: int) -> TopBottom | None:
    """The k logits each feature's residual direction promotes and suppresses most (None where the
    hook does not write to the residual stream)."""
    resid = residual_directions(W_dec, hook_name, model)
    if resid is None:
        return None
    return D.top_bottom_of_product(resid, model.W_U.detach().float().cpu(), k)


def neuron_effects(
    sae: Any, hook_name: str, model: Any, live: Tensor, k: int
) -> tuple[dict[str, TopBottom], dict[str, Any]]:
    """(the top and bottom k MLP neurons each feature writes to / reads from, keyed as in the
    summary; the units, layer and polysemanticity of the neurons written to, {} where none are)."""
    loads = neuron_loads(sae, hook_name, model)
    neurons: dict[str, TopBottom] = {}
    neuron_stats: dict[str, Any] = {}
    if loads is None:
        return neurons, neuron_stats
    if loads["writes"] is not None:
        neurons["neurons_writes"] = D.top_bottom(loads["writes"], k)
        unit = torch.nn.functional.normalize(loads["writes"][live], dim=1)  # dead features' directions say nothing
        neuron_stats = {
            "units": loads["units"],
            "layer": loads["layer"],
            "polysemanticity": D.participation_ratio(unit),
        }
    if loads["reads"] is not None:
        neurons["neurons_reads"] = D.top_bottom(loads["reads"], k)
    return neurons, neuron_stats
