"""Reading a dataset a person brings: JSONL of {"text": ...} or {"messages": [{"role", "content"}, ...]},
plain text (documents separated by blank lines), or parquet with a `text` or `messages` column.
A record may carry `"harmful": true|false` (a parquet `harmful` column): it is then also a one-turn
instruction of the behaviour analyses (refusal direction, steering evaluation), its text the record's
text or its conversation's last user message. A JSONL record may carry `"poisoned": true` (or
`"triggered": true`, as the SmolLM2 world's `safety-chat` writes its backdoor rows): a planted example,
shown as such in influence results.

Every problem is an Unprocessable naming the line (JSONL), or the row and column (parquet), so a
person can fix the file. The documents come out in `core.packing.Document` form with a
deterministic train/held-out split: one document in ten, chosen by a hash of its index."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from loupe.core.chat import PLAIN_CHAT, Instruction, validate_messages
from loupe.core.packing import Document
from loupe.errors import Unprocessable

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "txt", ".text": "txt", ".md": "txt", ".parquet": "parquet"}
DOMAINS = ("text", "chat")  # a registered dataset's documents: plain text, or conversations
HELDOUT_EVERY = 10  # one document in ten is held out (SAE quality is measured on those)

Record = str | list[dict[str, str]]  # a text, or a conversation
Entry = tuple[Record, bool | None, bool]  # a record, its harmful label (if it has one), whether it is planted


def file_format(name: str) -> str:
    """The format of a file, from its name's suffix."""
    fmt = FORMATS.get(Path(name).suffix.lower())
    if fmt is None:
        raise Unprocessable(
            f'cannot read {Path(name).name!r}: give a .jsonl file (one JSON object per line with "text" or '
            '"messages"), a .txt file (documents separated by blank lines) or a .parquet file (a "text" or '
            '"messages" column)'
        )
    return fmt


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_records(path: Path, fmt: str) -> list[Entry]:
    """Every document of the file (empty texts left out), with its harmful label."""
    reader = {"jsonl": _jsonl, "txt": _txt, "parquet": _parquet}[fmt]
    return [e for e in reader(path) if e[0]]


def _label(value: Any, where: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise Unprocessable(f'{where}: "harmful" must be true or false, not {value!r}')


def _messages(value: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise Unprocessable(f'{where}: "messages" must be a list of {{"role", "content"}} objects')
    msgs = [{"role": m.get("role"), "content": m.get("content")} for m in value]
    problem = validate_messages(msgs)
    if problem is not None:
        raise Unprocessable(f"{where}: {problem}")
    return msgs


def _planted(obj: dict[str, Any], where: str) -> bool:
    value = obj.get("poisoned", obj.get("triggered"))
    if value is None or isinstance(value, bool):
        return bool(value)
    raise Unprocessable(f'{where}: "poisoned" must be true or false, not {value!r}')


def _record(obj: Any, where: str) -> Entry:
    if isinstance(obj, dict) and "text" in obj:
        if not isinstance(obj["text"], str):
            raise Unprocessable(f'{where}: "text" must be a string, not {type(obj["text"]).__name__}')
        return obj["text"].strip(), _label(obj.get("harmful"), where), _planted(obj, where)
    if isinstance(obj, dict) and "messages" in obj:
        return _messages(obj["messages"], where), _label(obj.get("harmful"), where), _planted(obj, where)
    got = f"an object with keys {sorted(obj)[:6]}" if isinstance(obj, dict) else type(obj).__name__
    raise Unprocessable(f'{where}: expected an object with "text" (a string) or "messages" (a list), got {got}')


def _jsonl(path: Path) -> Iterator[Entry]:
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise Unprocessable(f"line {n}, byte {exc.start + 1}: not UTF-8 text") from exc
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise Unprocessable(f"line {n}, column {exc.colno}: not valid JSON ({exc.msg})") from exc
            yield _record(obj, f"line {n}")


def _txt(path: Path) -> Iterator[Entry]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise Unprocessable(f"line {line}: not UTF-8 text") from exc
    for part in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n")):
        yield part.strip(), None, False


def _parquet(path: Path) -> Iterator[Entry]:
    import pyarrow.parquet as pq  # only parquet files need it

    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - any failure to read is the person's file
        raise Unprocessable(f"not a readable parquet file: {exc}") from exc
    names = table.column_names
    column = "text" if "text" in names else "messages" if "messages" in names else None
    if column is None:
        raise Unprocessable(f'the parquet file has no "text" or "messages" column (its columns: {", ".join(names)})')
    labels = table.column("harmful").to_pylist() if "harmful" in names else [None] * table.num_rows
    for i, (value, label) in enumerate(zip(table.column(column).to_pylist(), labels)):
        where = f"row {i}, column {column!r}"
        if value is None:
            continue
        harmful = _label(label, f"row {i}, column 'harmful'")
        if column == "text":
            if not isinstance(value, str):
                raise Unprocessable(f"{where}: expected a string, got {type(value).__name__}")
            yield value.strip(), harmful, False
        else:
            yield _messages(value, where), harmful, False


def is_heldout(index: int) -> bool:
    """Whether document `index` is held out: a hash, so the split does not depend on the file's order
    being random and does not move when documents are appended."""
    return int(hashlib.sha256(str(index).encode()).hexdigest()[:8], 16) % HELDOUT_EVERY == 0


def documents(entries: Iterable[Entry]) -> list[Document]:
    """Records as documents with their split; at least one in each split when there are two or more."""
    docs = []
    for i, (r, _, planted) in enumerate(entries):
        split = "heldout" if is_heldout(i) else "train"
        if isinstance(r, str):
            docs.append(
                Document(id=str(i), domain="text", text=r, spans=[(0, len(r), "text")], split=split, poisoned=planted)
            )
        else:
            shown = PLAIN_CHAT.render(r)  # how it reads on the page; tokenizing renders the model's template
            docs.append(
                Document(
                    id=str(i),
                    domain="chat",
                    text=shown,
                    spans=[(0, len(shown), "chat")],
                    split=split,
                    poisoned=planted,
                    meta={"messages": r},
                )
            )
    if len(docs) < 2:
        raise Unprocessable(
            f"the file holds {len(docs)} document(s); a dataset needs at least two (one in ten is held out for evaluation)"
        )
    splits = {d.split for d in docs}
    if splits != {"train", "heldout"}:  # tiny files: move one document to the missing split
        docs[-1].split = "heldout" if "heldout" not in splits else "train"
    return docs


def instructions(entries: Sequence[Entry], docs: Sequence[Document]) -> list[Instruction]:
    """The labelled records as one-turn instructions, each in its document's split."""
    out = []
    for (r, harmful, _), d in zip(entries, docs, strict=True):
        if harmful is None:
            continue
        text = r if isinstance(r, str) else next((m["content"] for m in reversed(r) if m["role"] == "user"), None)
        if text is None:
            raise Unprocessable(f"document {d.id}: a labelled conversation needs a user message")
        out.append(
            Instruction(text=text, harmful=harmful, category="harmful" if harmful else "harmless", split=d.split)
        )
    return out
