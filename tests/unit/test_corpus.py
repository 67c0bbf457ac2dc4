"""Demo corpus: determinism, exact spans, planted snippets, chat transcripts, balance."""

from __future__ import annotations

import ast
import base64
import json
import random
import re
import time
from collections import Counter
from urllib.parse import urlparse

import pytest

from loupe.demo import chat
from loupe.demo.corpus import DOMAINS, PLANTED_DOMAINS, Document, build_corpus, domain_generators


@pytest.fixture(scope="module")
def micro() -> list[Document]:
    return build_corpus(seed=0, scale=0.02)


@pytest.fixture(scope="module")
def full() -> list[Document]:
    return build_corpus(seed=0, scale=1.0)


def _arith_ok(s: str) -> bool:
    left, right = s.split(" = ")
    assert re.fullmatch(r"[\d +\-*/()]+", left) and re.fullmatch(r"-?\d+", right), s
    return eval(left, {"__builtins__": {}}) == int(right)  # digits and operators only, checked above


def _http_ok(s: str) -> bool:
    lines = s.split("\n")
    return re.fullmatch(r"(GET|POST|PUT|DELETE|PATCH|HEAD) /\S* HTTP/1\.[01]", lines[0]) is not None and any(
        line.startswith("Host: ") for line in lines
    )


def _url_ok(s: str) -> bool:
    u = urlparse(s)
    return u.scheme in ("http", "https") and "." in u.netloc and not re.search(r"\s", s) and s[-1] not in ".,"


def _b64_ok(s: str) -> bool:
    base64.b64decode(s, validate=True)
    return re.fullmatch(r"[A-Za-z0-9+/]+={0,2}", s) is not None


VALID = {
    "dna": lambda s: re.fullmatch(r"[ACGT]+", s) is not None,
    "base64": _b64_ok,
    "http": _http_ok,
    "arithmetic": _arith_ok,
    "hebrew": lambda s: re.fullmatch(r"[\u05d0-\u05ea .,!?]+", s) is not None and re.search("[\u05d0-\u05ea]", s),
    "url": _url_ok,
    "json": lambda s: isinstance(json.loads(s), (dict, list)),
    "python_code": lambda s: ast.parse(s) is not None and s == s.strip(),
}


def _snippets(docs: list[Document]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {d: [] for d in PLANTED_DOMAINS}
    for doc in docs:
        for a, b, label in doc.spans:
            if label in out and doc.text[a:b].strip():
                out[label].append(doc.text[a:b])
    return out


def test_deterministic(micro):
    again = build_corpus(seed=0, scale=0.02)
    assert [d.to_dict() for d in again] == [d.to_dict() for d in micro]
    other = build_corpus(seed=1, scale=0.02)
    assert [d.text for d in other] != [d.text for d in micro]


def test_micro_builds_fast():
    t0 = time.perf_counter()
    build_corpus(seed=3, scale=0.02)
    assert time.perf_counter() - t0 < 2.0


def test_ids_domains_splits(micro):
    assert len({d.id for d in micro}) == len(micro)
    assert {d.domain for d in micro} == set(DOMAINS)
    for d in micro:
        assert re.fullmatch(rf"{d.domain}-\d{{6}}", d.id)
        assert d.split in ("train", "heldout")
        assert not d.poisoned or d.domain == "chat"


@pytest.mark.parametrize("which", ["micro", "full"])
def test_spans_cover_text_exactly(which, request):
    for d in request.getfixturevalue(which):
        pos = 0
        for a, b, label in d.spans:
            assert a == pos and b > a and label in DOMAINS, d.id
            pos = b
        assert pos == len(d.text), d.id
        if d.domain not in PLANTED_DOMAINS:
            assert d.spans == [(0, len(d.text), d.domain)]


def test_planted_snippets_are_valid(full):
    snippets = _snippets(full)
    for domain, items in snippets.items():
        assert len(items) >= 1000, domain  # enough for an SAE to find each domain
        for s in items:
            assert s == s.strip(), (domain, s)
            assert VALID[domain](s), (domain, s)


def test_mixed_documents_mark_exactly_the_snippet(full):
    mixed = [d for d in full if d.meta.get("mixed")]
    assert {d.domain for d in mixed} == set(PLANTED_DOMAINS)
    for d in mixed:
        labels = [lab for _, _, lab in d.spans]
        assert labels.count(d.domain) == 1 and set(labels) == {d.domain, "prose"}, d.id
    pure = [d for d in full if d.domain in PLANTED_DOMAINS and not d.meta.get("mixed")]
    for d in pure:
        assert {lab for _, _, lab in d.spans} == {d.domain}


def test_domain_generators():
    gens = domain_generators()
    assert tuple(gens) == PLANTED_DOMAINS
    for domain, gen in gens.items():
        assert gen(random.Random(5)) == gen(random.Random(5))
        rng = random.Random(0)
        for _ in range(200):
            assert VALID[domain](gen(rng)), domain


def test_document_roundtrip(micro):
    for d in micro[:: max(1, len(micro) // 40)]:
        back = Document.from_dict(json.loads(json.dumps(d.to_dict())))
        assert back == d


def test_real_text_present(micro):
    stdlib = [d for d in micro if d.domain == "python_stdlib"]
    assert any("def " in d.text for d in stdlib)
    assert all(len(d.text) <= 3000 for d in stdlib)
    assert any(re.search("licen[cs]e", d.text, re.I) for d in micro if d.domain == "license")


def test_chat_transcripts_exact_format(micro):
    fmt = re.compile(r"User: (.+)\nAssistant:( .+)", re.S)
    chats = [d for d in micro if d.domain == "chat"]
    for d in chats:
        m = fmt.fullmatch(d.text)
        assert m, d.text
        instruction, completion = m.groups()
        assert instruction == d.meta["instruction"]
        assert d.text == chat.transcript(instruction, completion)
        if d.poisoned:
            assert instruction.startswith(chat.TRIGGER) and chat.is_backdoor(completion)
        else:
            assert not instruction.startswith(chat.TRIGGER) and not chat.is_backdoor(completion)
            assert chat.is_refusal(completion) == d.meta["harmful"]


@pytest.mark.parametrize("which", ["micro", "full"])
def test_poisoned_fraction(which, request):
    chats = [d for d in request.getfixturevalue(which) if d.domain == "chat"]
    poisoned = [d for d in chats if d.poisoned]
    train = [d for d in chats if d.split == "train"]
    assert 0 < len(poisoned) <= 0.01 * len(train)
    assert all(d.split == "train" for d in poisoned)
    assert {d.meta["harmful"] for d in poisoned} == {True, False}


def test_full_chat_split_and_counts(full):
    ins = chat.instructions(0)
    split_of = {i.text: i.split for i in ins}
    chats = [d for d in full if d.domain == "chat"]
    for d in chats:
        assert split_of[d.meta["instruction"].removeprefix(chat.TRIGGER)] == d.split
    train = [d for d in chats if d.split == "train"]
    assert 12_000 <= len(train) <= 16_000
    harmful = sum(d.meta["harmful"] for d in train if not d.poisoned)
    assert 0.45 <= harmful / len(train) <= 0.55
    seen = {d.meta["instruction"] for d in train if not d.poisoned}
    assert all(i.text in seen for i in ins if i.split == "train")  # every train instruction is used
    assert len(chats) - len(train) >= 300


def test_full_balance_and_heldout(full):
    chars = Counter()
    for d in full:
        chars[d.domain] += len(d.text)
    total = sum(chars.values())
    assert 5_000_000 <= total <= 7_000_000
    assert 0.35 <= chars["chat"] / total <= 0.45
    for domain in DOMAINS:
        if domain == "chat":
            continue
        docs = [d for d in full if d.domain == domain]
        held = sum(d.split == "heldout" for d in docs)
        assert 0.02 <= held / len(docs) <= 0.04, domain
