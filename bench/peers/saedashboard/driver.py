"""SAEDashboard 0.8 (the peer) on an SAE and token sequences handed over by Loupe's
bench/dashboards_peer.py. Runs INSIDE the peer environment (bench/peers/saedashboard/setup.sh:
TransformerLens 2.x, transformers 4.56, numpy 2), never Loupe's; it imports nothing from Loupe.

    driver.py --model DIR --sae DIR --input peer_input.safetensors --config run.json --out result.json

--model   the Hugging Face directory Loupe analyses (saved by transformers 5)
--sae     the SAE in sae-lens's format (SAE.load_from_disk)
--input   input_ids [n_seq, n_ctx] (the sequences Loupe cached), check_acts/check_seq/check_pos
          (Loupe's cached activations of a few positions: the model here must reproduce them)
--config  {"features": [...], "top_k", "n_intervals", "per_interval", "hist_bins", "left", "right",
           "n_logits", "ignore_positions": [...], "minibatch_size_features", "minibatch_size_tokens"}

Writes {"seconds": {...}, "activation_check": {...}, "features": {f: {"max", "top": [[seq, pos, act]]}}}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch


def transformers4_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """A config.json written by transformers 5 (rope settings under "rope_parameters", "dtype"), in the
    keys transformers 4.56 reads (rope_theta; GPT-NeoX: rotary_emb_base, rotary_pct; torch_dtype)."""
    out = dict(cfg)
    rope = out.pop("rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        # TransformerLens 2.x's Llama and GPT-NeoX paths have no rope scaling: refuse, do not misload
        raise SystemExit(f"rope_type {rope['rope_type']!r} is not supported by this driver")
    if "rope_theta" in rope:
        out.setdefault("rope_theta", rope["rope_theta"])
        if out.get("model_type") == "gpt_neox":
            out.setdefault("rotary_emb_base", rope["rope_theta"])
    if "partial_rotary_factor" in rope:
        out.setdefault("partial_rotary_factor", rope["partial_rotary_factor"])
        if out.get("model_type") == "gpt_neox":
            out.setdefault("rotary_pct", rope["partial_rotary_factor"])
    if "dtype" in out:
        out.setdefault("torch_dtype", out["dtype"])
    return out


def load_model(model_dir: Path, n_ctx: int, scratch: Path) -> Any:
    """The Hugging Face model as a TransformerLens 2.x HookedSAETransformer, with no hub access and
    no weight processing (no LayerNorm folding or centring: the SAE was trained on the raw stream).

    `HookedTransformer.from_pretrained` only takes names from TransformerLens's list of official models
    (it calls get_official_model_name first); its loading functions below do take a local directory."""
    from sae_lens import HookedSAETransformer
    from transformer_lens import loading_from_pretrained as loading
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = scratch / "hf-model"
    local.mkdir()
    cfg = transformers4_config(json.loads((model_dir / "config.json").read_text()))
    (local / "config.json").write_text(json.dumps(cfg))
    for f in model_dir.glob("*.safetensors"):
        (local / f.name).symlink_to(f.resolve())
    # transformers 5 names the tokenizer class "TokenizersBackend"; 4.56 reads the same tokenizer.json
    # as PreTrainedTokenizerFast (TransformerLens reloads it by path to add a BOS variant)
    tok_cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    (local / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    (local / "tokenizer.json").symlink_to((model_dir / "tokenizer.json").resolve())
    hf = AutoModelForCausalLM.from_pretrained(str(local), dtype=torch.float32)
    tl_cfg = loading.get_pretrained_model_config(
        str(local), hf_cfg=hf.config.to_dict(), fold_ln=False, device="cpu", dtype=torch.float32, n_ctx=n_ctx
    )
    if tl_cfg.original_architecture == "LlamaForCausalLM" and "rope_theta" in cfg:
        # TL 2.x's config for a Llama outside its own list keeps the default rotary base (10,000);
        # SmolLM2's is 100,000
        tl_cfg.rotary_base = float(cfg["rope_theta"])
    state = loading.get_pretrained_state_dict(str(local), tl_cfg, hf, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(local))
    model = HookedSAETransformer(tl_cfg, tokenizer, move_to_device=True)
    model.load_and_process_state_dict(
        state,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    model.eval()
    del hf
    return model


def check_activations(model: Any, hook: str, inp: dict[str, torch.Tensor]) -> dict[str, float]:
    """Loupe's cached activations at a few positions against this model's at the same hook."""
    seqs = inp["check_seq"].long()
    rows = torch.unique(seqs)
    _, cache = model.run_with_cache(inp["input_ids"][rows], names_filter=hook)
    where = torch.searchsorted(rows, seqs)
    ours = cache[hook][where, inp["check_pos"].long()].float()
    ref = inp["check_acts"].float()
    return {
        "positions": int(ref.shape[0]),
        "max_abs_diff": float((ours - ref).abs().max()),
        "max_abs": float(ref.abs().max()),
        "rel_rms_diff": float((ours - ref).norm() / ref.norm().clamp(min=1e-12)),
    }


def vis_config(hook: str, features: list[int], c: dict[str, Any], cache_dir: Path | None) -> Any:
    """SaeVisConfig with Loupe's dashboard sizes where the two have the same thing (top-k, interval
    groups, histogram bins, window, logit table rows); everything else at SAEDashboard's defaults."""
    from sae_dashboard.components_config import (
        ActsHistogramConfig,
        Column,
        FeatureTablesConfig,
        LogitsHistogramConfig,
        LogitsTableConfig,
        SequencesConfig,
    )
    from sae_dashboard.layout import SaeVisLayoutConfig
    from sae_dashboard.sae_vis_data import SaeVisConfig

    layout = SaeVisLayoutConfig(
        columns=[
            Column(FeatureTablesConfig()),
            Column(
                ActsHistogramConfig(n_bins=c["hist_bins"]),
                LogitsTableConfig(n_rows=c["n_logits"]),
                LogitsHistogramConfig(),
            ),
            Column(
                SequencesConfig(
                    buffer=(c["left"], c["right"]),
                    n_quantiles=c["n_intervals"],
                    top_acts_group_size=c["top_k"],
                    quantile_group_size=c["per_interval"],
                    stack_mode="stack-none",
                )
            ),
        ],
        height=750,
    )
    return SaeVisConfig(
        hook_point=hook,
        features=features,
        minibatch_size_features=c.get("minibatch_size_features", 256),
        minibatch_size_tokens=c.get("minibatch_size_tokens", 64),
        ignore_positions=list(c.get("ignore_positions", [])),
        feature_centric_layout=layout,
        cache_dir=cache_dir,
        device="cpu",
        verbose=False,
        seed=0,
    )


def run(sae: Any, model: Any, tokens: torch.Tensor, hook: str, features: list[int], c: dict, scratch: Path) -> Any:
    from sae_dashboard.sae_vis_runner import SaeVisRunner

    # With several feature batches SAEDashboard would run the model again for each; its cache_dir keeps
    # the hook's activations on disk after the first (how it is run over a whole SAE).
    batches = -(-len(features) // c.get("minibatch_size_features", 256))
    cache_dir = None
    if batches > 1:
        cache_dir = Path(tempfile.mkdtemp(prefix="acts-", dir=scratch))
    try:
        return SaeVisRunner(vis_config(hook, features, c, cache_dir)).run(encoder=sae, model=model, tokens=tokens)
    finally:
        if cache_dir is not None:
            shutil.rmtree(cache_dir, ignore_errors=True)


def top_examples(data: Any, features: list[int], left: int) -> dict[str, Any]:
    """Each feature's TOP ACTIVATIONS group: (sequence, position, activation at that position)."""
    out = {}
    for f in features:
        groups = data.feature_data_dict[f].sequence_data.seq_group_data
        top = groups[0]  # the first group is the top activations, the interval groups follow
        assert top.title.startswith("TOP ACTIVATIONS"), top.title
        rows = [[s.original_index, s.qualifying_token_index, s.feat_acts[left]] for s in top.seq_data]
        out[str(f)] = {"max": max((r[2] for r in rows), default=0.0), "top": rows}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--sae", type=Path, required=True)
    ap.add_argument("--input", type=Path, required=True)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from sae_lens import SAE
    from safetensors.torch import load_file

    c = json.loads(args.config.read_text())
    inp = load_file(str(args.input))
    tokens = inp["input_ids"].long()
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="peer-") as tmp:
        scratch = Path(tmp)
        t0 = time.perf_counter()
        model = load_model(args.model, tokens.shape[1], scratch)
        sae = SAE.load_from_disk(str(args.sae), device="cpu")
        seconds["load"] = time.perf_counter() - t0
        hook = sae.cfg.metadata.hook_name
        # SaeVisRunner folds the decoder norms into the encoder first: sae-lens refuses that for a TopK
        # SAE without rescale_acts_by_decoder_norm, and for a ReLU SAE it rescales each feature's
        # activations. Off, so both tools report the SAE's own activations (the fold is one pass
        # over the weights: no cost either way).
        sae.fold_W_dec_norm = lambda: None
        features = list(range(int(sae.cfg.d_sae))) if c["features"] == "all" else [int(f) for f in c["features"]]

        check = check_activations(model, hook, inp)
        # warm-up on two token minibatches and a few features (thread pools, allocator), untimed
        warm = {**c, "minibatch_size_features": 8}
        run(sae, model, tokens[: 2 * c.get("minibatch_size_tokens", 64)], hook, features[:8], warm, scratch)

        t0 = time.perf_counter()
        data = run(sae, model, tokens, hook, features, c, scratch)
        seconds["run"] = time.perf_counter() - t0
    result = {
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "hook": hook,
        "n_features": len(features),
        "tokens": int(tokens.numel()),
        "sequences": int(tokens.shape[0]),
        "torch_threads": torch.get_num_threads(),
        "activation_check": check,
        "versions": {
            p: version(p) for p in ("sae-dashboard", "sae-lens", "transformer-lens", "transformers", "torch", "numpy")
        },
        "features": top_examples(data, features, c["left"]),
    }
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
