"""The codebase's shape, checked: import-linter's contracts (pyproject.toml), no unexplained
function-level import of a loupe module, and no module over the length limit without its reason."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "backend" / "loupe"
MAX_LINES = 420
LONG_REASON = "Long because"


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)


def test_import_contracts_hold():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is not installed (make install installs the dev extra)"
    out = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "broken" in out.stdout and " 0 broken" in out.stdout


def test_function_level_imports_of_loupe_say_why():
    """A loupe module imported inside a function hides a dependency (often a cycle); each one carries a
    comment on its line or the line above saying why it is deferred."""
    unexplained = []
    for path in _modules():
        src = path.read_text()
        lines = src.splitlines()
        for node in ast.walk(ast.parse(src)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom):
                    names = [inner.module or ""]
                elif isinstance(inner, ast.Import):
                    names = [a.name for a in inner.names]
                else:
                    continue
                if not any(n == "loupe" or n.startswith("loupe.") for n in names):
                    continue
                here, above = lines[inner.lineno - 1], lines[inner.lineno - 2] if inner.lineno > 1 else ""
                if "#" not in here and not above.strip().startswith("#"):
                    # a block of imports: the comment may sit on the block's first line
                    block = [lines[i] for i in range(inner.lineno - 2, max(-1, inner.lineno - 6), -1)]
                    if not any("#" in b for b in block if b.strip().startswith(("from ", "import ", "#"))):
                        unexplained.append(f"{path.relative_to(ROOT)}:{inner.lineno}: {here.strip()}")
    assert not unexplained, "function-level loupe imports without a reason:\n" + "\n".join(unexplained)


def test_long_modules_say_why_in_their_head():
    too_long = []
    for path in _modules():
        n = len(path.read_text().splitlines())
        if n > MAX_LINES:
            head = ast.get_docstring(ast.parse(path.read_text())) or ""
            if LONG_REASON not in head:
                too_long.append(f"{path.relative_to(ROOT)}: {n} lines")
    assert not too_long, f"modules over {MAX_LINES} lines without '{LONG_REASON} ...' in their docstring: {too_long}"
