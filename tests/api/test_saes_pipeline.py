"""The SAE slice on the micro world: cached activations -> SAE training (sae-lens) -> quality metrics."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from loupe.core.activations import cache_activations
from loupe.core.sae_metrics import spliced_losses
from loupe.jobs.pipeline import Pipeline
from loupe.services.activations import ActivationCache, real_positions, sequences_for
from loupe.services.datasets import SPLITS
from loupe.services.saes.build import SAEPipeline
from loupe.services.saes.training import fit_sae, load_sae, train_sae
from loupe.storage.artifacts import load_tensors, read_manifest


@pytest.fixture(scope="module")
def sp(micro_container) -> SAEPipeline:
    pipe = micro_container.sae_pipeline()
    steps = pipe.steps()
    Pipeline(micro_container.jobs, steps).run(steps)
    return pipe


@pytest.fixture(scope="module")
def bridge(sp):
    from loupe.services.models import load_bridge

    return load_bridge(str(sp.subject.model_dir))[0]


def test_steps_are_background_jobs_and_a_second_run_skips_them(sp, micro_container, micro_workspace):
    steps = sp.steps()
    assert all(s.background for s in steps)
    assert [s.name for s in steps] == [
        "saes.cache.blocks.0.mlp.hook_post",
        "saes.cache.blocks.1.hook_resid_pre",
        "saes.train.mlp0",
        "saes.train.resid1",
        "saes.eval",
        "saes.dashboards.mlp0",
        "saes.dashboards.resid1",
    ]
    pipeline = Pipeline(micro_container.jobs, steps)
    assert pipeline.pending() == []
    assert all(micro_workspace.jobs.latest_done(s.name) is not None for s in steps)


def test_cache_holds_every_real_token_once_and_no_padding(sp):
    for hook in sp.hooks:
        cfg = sp.cache_cfgs[hook]
        cache = ActivationCache(sp.cache_dir(hook))
        assert cache.hook_name == hook and cache.manifest["key"] == sp.cache_keys[hook]
        for split in SPLITS:
            toks = load_tensors(sp.subject.tokens_dir / f"{split}.safetensors")
            real = real_positions(toks["loss_mask"])
            info = cache.manifest["splits"][split]
            n_seq = sequences_for(real, cfg.max_tokens(split))
            assert info["n_sequences"] == n_seq
            expected = int(real[:n_seq].sum())
            assert expected < int(real.numel())  # there was padding to skip
            assert cache.n_tokens(split) == expected == sum(s["n_tokens"] for s in info["shards"])
            assert all(s["n_tokens"] <= cfg.shard_tokens for s in info["shards"])
            data = cache.load(split)
            assert data["acts"].shape == (expected, cache.d_in)
            seq, pos = data["seq"].long(), data["pos"].long()
            assert real[seq, pos].all()  # only real positions
            order = seq * real.shape[1] + pos
            assert (order[1:] > order[:-1]).all()  # each once, in order
            assert (data["domain"] >= 0).all()
            assert torch.equal(data["domain"], toks["domain_ids"][seq, pos])
            assert torch.equal(data["token"].long(), toks["input_ids"][seq, pos])
        if cfg.max_train_tokens is not None:
            assert cache.n_tokens("train") >= cfg.max_train_tokens


def test_stopping_after_the_last_needed_layer_matches_a_full_run_with_cache(sp, bridge):
    toks = load_tensors(sp.subject.tokens_dir / "heldout.safetensors")
    x = toks["input_ids"][:4]
    with torch.no_grad():
        _, full = bridge.run_with_cache(x, names_filter=sp.hooks)
    later = []
    with bridge.hooks(fwd_hooks=[("blocks.1.hook_out", lambda a, hook: later.append(1))]):
        for hook in sp.hooks:
            early = cache_activations(bridge, x, [hook])
            assert torch.equal(early[hook], full[hook])
        both = cache_activations(bridge, x, sp.hooks)
    assert later == []  # block 1 never finished
    for hook in sp.hooks:
        assert torch.equal(both[hook], full[hook])
        # the cached file holds exactly these activations at the real positions (micro: float32)
        data = ActivationCache(sp.cache_dir(hook)).load("heldout")
        sel = data["seq"] < 4
        want = full[hook][data["seq"][sel].long(), data["pos"][sel].long()]
        assert torch.equal(data["acts"][sel], want)


def test_trained_saes_load_from_disk_and_reconstruct(sp):
    from sae_lens import SAE

    records = {r.id: r for r in sp.registry.records("demo")}
    for p in sp.presets:
        cache = ActivationCache(sp.cache_dir(p.hook_name))
        sae = SAE.load_from_disk(str(sp.sae_dir(p)))
        assert sae.cfg.architecture() == {"matryoshka": "topk"}.get(p.architecture, p.architecture)
        assert (sae.cfg.d_in, sae.cfg.d_sae) == (cache.d_in, p.expansion * cache.d_in)
        assert sae.cfg.metadata.hook_name == p.hook_name
        x = cache.load("heldout", max_tokens=64)["acts"].float()
        codes = sae.encode(x)
        assert codes.shape == (64, sae.cfg.d_sae) and (codes >= 0).all()
        assert sae.decode(codes).shape == x.shape == sae(x).shape
        assert records[sp.sae_id(p)].hook_name == p.hook_name
        assert read_manifest(sp.sae_dir(p))["key"] == sp.sae_keys[p.name]


@pytest.mark.parametrize("arch", ["standard", "topk", "matryoshka"])
def test_a_few_steps_train_save_and_load_the_same_sae(sp, tmp_path, arch):
    base = next((p for p in sp.presets if p.architecture == arch), sp.presets[-1])
    cfg = replace(
        base,
        architecture=arch,
        train_tokens=1024,
        batch_size=256,
        lr_warm_up_fraction=0.0,
        temporal_coefficient=base.temporal_coefficient if arch == "matryoshka" else 0.0,
    )
    cache = ActivationCache(sp.cache_dir(cfg.hook_name))
    t = cache.load("train", max_tokens=cfg.train_tokens, fields=["acts", "seq", "pos"])
    trained, stats = fit_sae(cfg, t["acts"], seq=t["seq"], pos=t["pos"])
    assert stats["steps"] == 4 and stats["tokens"] == 1024
    m = train_sae(cfg, cache, tmp_path / "sae", key="k")  # same seed: same weights
    assert m["key"] == "k" and (tmp_path / "sae" / "cfg.json").exists()
    loaded = load_sae(tmp_path / "sae")
    x = cache.load("heldout", max_tokens=128)["acts"].float()
    with torch.no_grad():
        assert torch.allclose(loaded(x), trained(x), atol=1e-5, rtol=1e-4)
        if arch != "standard":  # matryoshka loads as topk
            assert loaded.cfg.architecture() == "topk"
            assert ((loaded.encode(x) != 0).sum(-1) <= cfg.k).all()
    if arch == "matryoshka":
        assert m["training"]["matryoshka_widths"] == cfg.matryoshka_widths(m["d_sae"])
        assert cfg.temporal_coefficient > 0  # the micro preset covers the temporal loss
        with pytest.raises(ValueError, match="sequence and position"):
            fit_sae(cfg, t["acts"])


def test_eval_reports_every_metric_in_range_and_is_stored(sp, micro_workspace):
    rows = micro_workspace.evals.list(kind="saes", limit=1)
    assert rows and read_manifest(sp.eval_dir)["eval_id"] == rows[0].id
    r = rows[0].results
    assert r["model_id"] == "demo" and set(r["saes"]) == {sp.sae_id(p) for p in sp.presets}
    for p in sp.presets:
        x = r["saes"][sp.sae_id(p)]
        assert x["hook_name"] == p.hook_name and x["d_sae"] == p.expansion * x["d_in"]
        assert 0 < x["eval_tokens"] <= p.eval_tokens
        assert 0 <= x["fvu"] < 1 and math.isclose(x["explained_variance"], 1 - x["fvu"])
        assert 0 < x["l0"] <= x["d_sae"]
        if p.architecture != "standard":
            assert x["l0"] <= p.k
        assert 0 <= x["dead_fraction"] <= 1 and 0 <= x["dense_fraction"] <= 1
        ce = x["ce"]
        assert ce["tokens"] > 0 and ce["clean"] < ce["zero_ablated"]
        assert 0 < x["ce_loss_recovered"] <= 1.05
        assert x["domains"] and all(0 <= d["auroc"] <= 1 and 0 <= d["auroc_oracle"] <= 1 for d in x["domains"].values())
        assert all(d["auroc"] <= d["auroc_oracle"] + 1e-12 for d in x["domains"].values())
        assert 0 <= x["planted_domains_detected"] <= 8
        assert set(x["targets"]) == {"fvu", "l0", "dead_fraction", "ce_loss_recovered", "planted_domains_detected"}


def test_splicing_the_identity_or_zeros_into_the_micro_model(sp, bridge):
    toks = load_tensors(sp.subject.tokens_dir / "heldout.safetensors")
    ids, mask = toks["input_ids"][:6], toks["loss_mask"][:6]
    for hook in sp.hooks:
        ident = spliced_losses(bridge, ids, mask, hook, lambda a: a)
        assert ident["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-9)
        zeros = spliced_losses(bridge, ids, mask, hook, torch.zeros_like)
        assert zeros["ce_loss_recovered"] == pytest.approx(0.0, abs=1e-9)
