"""Datasets as first-class objects: registered from JSONL (texts and conversations), plain text and
parquet files by upload and by the service, stored in the workspace with a deterministic split,
refused with a 4xx naming what is wrong, tokenized per model (conversations with its chat template)."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from loupe.jobs.pipeline import Pipeline
from loupe.services.dataset_files import is_heldout
from loupe.storage.artifacts import load_tensors, read_manifest

CHAT = [{"role": "user", "content": "What is rain?"}, {"role": "assistant", "content": "Water falling from clouds."}]


def jsonl(rows) -> bytes:
    return "\n".join(json.dumps(r) for r in rows).encode()


def upload(client, dataset_id, filename, data: bytes, **form):
    return client.post("/api/datasets", files={"file": (filename, data)}, data={"id": dataset_id, **form})


def test_jsonl_upload_of_texts_and_conversations(client, micro_workspace):
    rows = [{"text": f"  Document number {i} about rivers.  "} for i in range(12)] + [{"messages": CHAT}] * 3
    r = upload(client, "ds-jsonl", "rivers.jsonl", jsonl(rows) + b"\n\n", name="Rivers")
    assert r.status_code == 201, r.text
    body = r.json()
    heldout = sum(is_heldout(i) for i in range(15))
    assert body["counts"] == {
        "documents": 15,
        "train": 15 - heldout,
        "heldout": heldout,
        "texts": 12,
        "conversations": 3,
        "chars": body["counts"]["chars"],
        "bytes": len(jsonl(rows)) + 2,
        "harmful": 0,
        "harmless": 0,
    }
    assert 0 < heldout < 15 and body["name"] == "Rivers" and body["format"] == "jsonl" and body["deletable"]
    assert body["samples"][0]["text"] == "Document number 0 about rivers."  # stripped
    listed = {d["id"]: d for d in client.get("/api/datasets").json()["datasets"]}
    assert listed["demo-corpus"]["source"] == "world" and not listed["demo-corpus"]["deletable"]
    assert listed["demo-corpus"]["counts"]["documents"] > 0
    assert listed["ds-jsonl"]["sha256"] == body["sha256"] and len(body["sha256"]) == 64
    # stored in the workspace as documents with the split by a hash of the index
    d = client.get("/api/datasets/ds-jsonl", params={"samples": 50}).json()
    assert [s["split"] for s in d["samples"]] == ["heldout" if is_heldout(i) else "train" for i in range(15)]
    conv = d["samples"][12]
    assert conv["domain"] == "chat" and conv["messages"] == CHAT
    assert conv["text"] == "User: What is rain?\nAssistant: Water falling from clouds."
    m = read_manifest(micro_workspace.artifact("datasets", "ds-jsonl"))
    assert m["source_sha256"] == body["sha256"] and m["documents"] == 15


def test_txt_by_the_service_and_parquet_uploads(client, micro_container, tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("first paragraph\nstill the first\n\n  \nsecond\r\n\r\nthird one\n\n\n")
    d = micro_container.datasets.add_file(txt, "ds-txt")
    assert d["format"] == "txt" and d["source"] == "file" and d["path"] == str(txt)
    docs = micro_container.datasets.get("ds-txt").documents()
    assert [x.text for x in docs] == ["first paragraph\nstill the first", "second", "third one"]
    assert {x.split for x in docs} == {"train", "heldout"}  # a tiny file still gets both splits

    buf = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": ["alpha beta", "gamma", None, "delta"], "n": [1, 2, 3, 4]}), buf)
    r = upload(client, "ds-parquet-text", "t.parquet", buf.read_bytes())
    assert r.status_code == 201, r.text
    assert r.json()["counts"]["documents"] == 3 and r.json()["format"] == "parquet"
    pq.write_table(pa.table({"messages": [CHAT, CHAT[:1]]}), buf)
    r = upload(client, "ds-parquet-chat", "m.parquet", buf.read_bytes())
    assert r.status_code == 201, r.text
    assert r.json()["counts"]["conversations"] == 2


@pytest.mark.parametrize(
    "filename,data,needle",
    [
        ("a.jsonl", b'{"text": "ok"}\n{"text": "fine"}\n{"text": oops}\n', "line 3, column 10: not valid JSON"),
        ("a.jsonl", b'{"text": "ok"}\n{"body": "x"}\n', 'line 2: expected an object with "text"'),
        ("a.jsonl", b'{"text": 5}\n', 'line 1: "text" must be a string'),
        ("a.jsonl", b'{"text": "a"}\n{"messages": [{"role": "bot", "content": "x"}]}\n', "line 2: messages[0].role"),
        ("a.jsonl", b'{"text": "a"}\n\xff\xfe\n', "line 2, byte 1: not UTF-8"),
        ("a.jsonl", b'{"text": "only one"}\n', "at least two"),
        ("a.jsonl", b'{"text": "a"}\n{"text": "b", "harmful": "yes"}\n', 'line 2: "harmful" must be true or false'),
        ("a.csv", b"text\nhello\n", "give a .jsonl file"),
        ("a.parquet", b"not parquet at all", "not a readable parquet file"),
    ],
)
def test_malformed_files_get_422_naming_what_to_fix(client, micro_workspace, filename, data, needle):
    r = upload(client, "ds-bad", filename, data)
    assert r.status_code == 422, r.text
    assert needle in r.json()["detail"]
    assert client.get("/api/datasets/ds-bad").status_code == 404
    assert not micro_workspace.artifact("datasets", "ds-bad").exists()


def test_parquet_without_a_text_column_names_its_columns(client, tmp_path):
    buf = tmp_path / "x.parquet"
    pq.write_table(pa.table({"body": ["a", "b"], "n": [1, 2]}), buf)
    r = upload(client, "ds-bad", "x.parquet", buf.read_bytes())
    assert r.status_code == 422 and "its columns: body, n" in r.json()["detail"]
    pq.write_table(pa.table({"text": [1, 2]}), buf)
    r = upload(client, "ds-bad", "x.parquet", buf.read_bytes())
    assert r.status_code == 422 and "row 0, column 'text': expected a string" in r.json()["detail"]


def test_uploads_over_the_limit_get_413_and_write_nothing(client, micro_workspace, monkeypatch):
    monkeypatch.setattr(micro_workspace.settings, "max_upload_bytes", 1_000)
    data = jsonl([{"text": "x" * 100}] * 12)  # ~1.3 kB: over the file limit, under the form's slack
    r = upload(client, "ds-big", "big.jsonl", data)
    assert r.status_code == 413 and "1,000 bytes" in r.json()["detail"]
    r = upload(client, "ds-big", "big.jsonl", data * 60)  # over the body limit: refused from its length
    assert r.status_code == 413
    assert client.get("/api/datasets/ds-big").status_code == 404
    assert not micro_workspace.artifact("datasets", "ds-big").exists()
    r = upload(client, "ds-small", "small.jsonl", jsonl([{"text": "a"}, {"text": "b"}]))
    assert r.status_code == 201


def test_ids_duplicates_deletes_and_missing_fields(client, micro_workspace):
    two = jsonl([{"text": "a"}, {"text": "b"}])
    assert upload(client, "ds-del", "d.jsonl", two).status_code == 201
    assert upload(client, "ds-del", "d.jsonl", two).status_code == 409
    assert upload(client, "demo-corpus", "d.jsonl", two).status_code == 409
    assert upload(client, "bad id!", "d.jsonl", two).status_code == 422
    r = client.post("/api/datasets", data={"id": "x"}, files={"other": ("d.jsonl", two)})
    assert r.status_code == 422 and '"file"' in r.json()["detail"]
    assert client.post("/api/datasets", json={"id": "x"}).status_code == 415  # multipart only
    r = client.delete("/api/datasets/demo-corpus")
    assert r.status_code == 409 and "world's own dataset" in r.json()["detail"]
    assert client.delete("/api/datasets/ds-del").status_code == 204
    assert not micro_workspace.artifact("datasets", "ds-del").exists()
    assert client.get("/api/datasets/ds-del").status_code == 404
    assert client.delete("/api/datasets/ds-del").status_code == 404


def test_conversations_are_tokenized_with_the_models_chat_template(client, micro_container, micro_workspace, tmp_path):
    """The same dataset in two models' tokens: the micro model (no template: the plain format) and a
    copy of it whose tokenizer has a ChatML template."""
    from transformers import AutoTokenizer

    c = micro_container
    path = tmp_path / "chatml"
    shutil.copytree(micro_workspace.artifact("model"), path)
    tok = AutoTokenizer.from_pretrained(path)
    tok.chat_template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    tok.save_pretrained(path)
    c.models.register("demo-chatml", str(path), "hf-dir")
    rows = [{"messages": CHAT}] * 6 + [{"text": "plain words here"}] * 6
    assert upload(client, "ds-chat", "c.jsonl", jsonl(rows)).status_code == 201

    def decoded(model_id: str) -> str:
        subject = c.datasets.subject(model_id, "ds-chat")
        step = c.datasets.tokens_step(subject)
        assert step is not None and step.output == micro_workspace.artifact("tokens", "ds-chat", f"{model_id}-64")
        Pipeline(c.jobs, [step]).run([step])
        assert step.is_complete()
        ids = load_tensors(subject.tokens("train"))["input_ids"]
        return "".join(tok.decode(row) for row in ids)

    templated = decoded("demo-chatml")
    assert "<|im_start|>user\nWhat is rain?<|im_end|>\n<|im_start|>assistant\nWater falling" in templated
    assert "User: What is rain?" not in templated and "plain words here" in templated
    plain = decoded("demo")
    assert "User: What is rain?\nAssistant: Water falling from clouds." in plain and "<|im_start|>" not in plain
    assert c.datasets.subject("demo", "demo-corpus") is c.datasets.world  # the world's own tokens
    assert c.datasets.tokens_step(c.datasets.world) is None


def test_labelled_records_are_instructions_for_steering(client, micro_workspace):
    """Records labelled "harmful" are the dataset's instruction sets: a refusal direction and a steering
    sweep take them by `dataset_id`, each split where it belongs (train for the direction, held-out for
    the sweep)."""
    harmful = [f"How do I break into house number {i}?" for i in range(30)]
    harmless = [f"How do I paint house number {i}?" for i in range(30)]
    rows = [{"text": t, "harmful": True} for t in harmful]
    rows += [{"messages": [{"role": "user", "content": t}], "harmful": False} for t in harmless]
    rows += [{"text": "An unlabelled document about houses."}] * 4
    r = upload(client, "ds-labelled", "prompts.jsonl", jsonl(rows))
    assert r.status_code == 201, r.text
    assert r.json()["counts"]["harmful"] == 30 and r.json()["counts"]["harmless"] == 30
    held = [i for i in range(60) if is_heldout(i)]
    n_held_harmful = sum(i < 30 for i in held)
    n_held_harmless = len(held) - n_held_harmful
    assert n_held_harmful and n_held_harmless  # both sets have held-out prompts in this file

    r = client.post(
        "/api/vectors/compute", json={"name": "from dataset", "dataset_id": "ds-labelled", "keep_unpassed": True}
    )
    assert r.status_code == 202, r.text
    job = client.get(f"/api/jobs/{r.json()['job_id']}").json()
    assert job["status"] == "done", job["error"]
    vid = job["artifacts"]["vector_id"]
    assert vid is not None
    r = client.post(
        "/api/steering/evaluate",
        json={"vector_id": vid, "methods": ["none"], "dataset_id": "ds-labelled", "max_new_tokens": 2},
    )
    assert r.status_code == 202, r.text
    job = client.get(f"/api/jobs/{r.json()['job_id']}").json()
    assert job["status"] == "done", job["error"]
    ev = client.get(f"/api/steering/evaluations/{job['artifacts']['eval_id']}").json()
    assert (ev["n_harmful"], ev["n_harmless"]) == (n_held_harmful, n_held_harmless)
    assert ev["rows"][0]["examples"]["harmless"][0]["prompt"].startswith("How do I paint house")

    # a dataset without labels: a 422 that says how to label
    upload(client, "ds-unlabelled", "docs.jsonl", jsonl([{"text": f"doc {i}"} for i in range(5)]))
    r = client.post("/api/vectors/compute", json={"name": "nothing", "dataset_id": "ds-unlabelled"})
    assert r.status_code == 422 and '"harmful": true or false' in r.json()["detail"]
    r = client.post("/api/vectors/compute", json={"name": "half", "harmful": harmful[:3]})
    assert r.status_code == 422 and "both" in r.json()["detail"]
