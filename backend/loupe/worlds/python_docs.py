"""The real-text dataset of the SmolLM2 world: the Python documentation that CPython ships with
itself, so every machine that runs Loupe has it and nothing is downloaded.

Two domains of human-written English prose (with some code):
- `reference`: the Python Language Reference and library topics of `pydoc_data.topics` (the text
  `help("if")` prints), one document per topic;
- `docstrings`: the docstrings of the standard library's modules, classes and functions (read with
  `ast`, never imported), one document per docstring of at least `min_chars` characters.

Why this rather than another corpus: the machine reaches PyPI but no dataset hub, and of what is
installed this is the largest body of ordinary prose (about 1.6 M characters, 0.4 M SmolLM2 tokens)
under a licence (PSF) that allows it; SmolLM2's pretraining mix includes Python and its docs, so the
model predicts it well (its held-out loss is in the world's eval)."""

from __future__ import annotations

import ast
import hashlib
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from loupe.core.packing import Document

DOMAINS = ("reference", "docstrings")
SKIPPED_PACKAGES = {"site-packages", "test", "idlelib", "lib2to3", "tkinter", "turtledemo", "ensurepip"}


def heldout(doc_id: str, fraction: float = 0.1) -> bool:
    """A stable split by a hash of the document id (the same on every machine and Python build)."""
    h = int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "big")
    return h < fraction * 2**64


def _reference() -> Iterator[tuple[str, str]]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield f"reference/{name}", topics[name].strip()


def _docstrings(min_chars: int) -> Iterator[tuple[str, str]]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        rel = path.relative_to(stdlib)
        if rel.parts[0] in SKIPPED_PACKAGES or "tests" in rel.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        module = ".".join(rel.with_suffix("").parts)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= min_chars:
                    name = getattr(node, "name", "")
                    yield f"docstrings/{module}{'.' + name if name else ''}:{getattr(node, 'lineno', 0)}", doc


def python_docs(min_chars: int = 200, per_domain: int | None = None) -> list[Document]:
    """Every document (or the first `per_domain` of each domain), its split fixed by `heldout`."""
    docs = []
    for domain, items in (("reference", _reference()), ("docstrings", _docstrings(min_chars))):
        for n, (doc_id, text) in enumerate(items):
            if per_domain is not None and n >= per_domain:
                break
            split = "heldout" if heldout(doc_id) else "train"
            docs.append(Document(id=doc_id, domain=domain, text=text, spans=[], split=split))
    return docs
