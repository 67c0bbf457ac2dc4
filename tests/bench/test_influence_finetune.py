"""bench/influence_finetune.py end to end on the tiny workspace it makes itself (a random 4-layer Llama
LoRA-tuned on demo chats with planted triggered ones): every part runs and reports what it measures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_tiny_run_reports_every_part(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "backend"), os.environ.get("PYTHONPATH")])),
    }
    script = ROOT / "bench" / "influence_finetune.py"
    r = subprocess.run(
        [
            sys.executable,
            str(script),
            "--tiny",
            "--threads",
            "1",
            "--lds-targets",
            "lora,mlp",
            "--rescore",
            "default,0",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    s = json.loads((tmp_path / "summary.json").read_text())

    b = s["build"]
    assert b["built_now"] and b["n_train"] > 100 and b["seconds_per_1000_sequences"] > 0
    # the shard files hold the manifest's bytes per row plus their headers
    assert (
        b["cache_bytes_per_sequence_manifest"]
        <= b["cache_bytes_per_sequence"]
        < 1.1 * b["cache_bytes_per_sequence_manifest"]
    )
    assert all(step["peak_rss_mb"] > 0 for step in b["steps"])

    p = s["precision"]
    for kind in ("triggered", "harmful"):
        assert 0 <= p[kind]["precision_at_10"] <= 1 and len(p[kind]["per_query"]) == 2
        assert 0 < p[kind]["share_of_training_set"] < 1
    # the planted conversations are found well above their share of the training set
    assert p["triggered"]["precision_at_10"] > 2 * p["triggered"]["share_of_training_set"]
    assert 0 < p["query_seconds_median"] <= p["query_seconds_max"]
    # each query asked once per re-scoring setting: the index's default re-scores, 0 serves the cache's ranking
    assert set(p["by_rescore"]) == {"default", "0"}
    assert p["by_rescore"]["default"]["triggered"] == p["triggered"]
    assert all(q["rescored"] > 0 for q in p["by_rescore"]["default"]["queries"])
    assert all(q["rescored"] == 0 for q in p["by_rescore"]["0"]["queries"])
    assert 0 <= p["by_rescore"]["0"]["triggered"]["precision_at_10"] <= 1

    sizes = s["scale"]["sizes"]
    assert [x["rows"] for x in sizes] == [1000, 4000, 16000] and all(x["tiled"] for x in sizes)
    assert sizes[2]["bytes"] == 16 * sizes[0]["bytes"] and all(x["scan_seconds"] > 0 for x in sizes)

    lds = s["lds"]
    # both targets scored on the same fine-tunes
    methods = ("ekfac_cache", "ekfac_exact", "dot", "cosine")
    assert set(lds["lds"]) == {f"{t}:{m}" for t in ("lora", "mlp") for m in methods}
    assert all(-1 <= v <= 1 for v in lds["lds"].values())
    assert -1 <= lds["noise_ceiling_seed_spearman"] <= 1
    assert set(lds["cache_vs_exact_spearman"]) == {"lora", "mlp"}
    assert all(-1 <= v <= 1 for v in lds["cache_vs_exact_spearman"].values())
    # the bench's exact EK-FAC is core's, for either target
    assert all(v < 1e-3 for v in lds["check_exact_vs_core_max_rel_diff"].values())
    assert lds["index_build"]["lora"]["n_train"] == lds["index_build"]["mlp"]["n_train"] == lds["setting"]["index_rows"]
    assert lds["timings"]["finetunes"] == 1 + 4 + 3  # A_full, the halves, the ceiling's reruns
    assert not (tmp_path / "lds-scratch").exists()
