import pytest
import torch

from loupe.storage.artifacts import atomic_dir, clean_scratch, load_tensors, read_manifest, save_tensors, write_manifest


def test_atomic_dir_publishes_whole_or_nothing(tmp_path):
    final = tmp_path / "a" / "step"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "half.bin").write_bytes(b"x" * 10)
            raise RuntimeError("killed mid-write")
    assert not final.exists()
    assert list(final.parent.iterdir()) == []

    with atomic_dir(final) as tmp:
        save_tensors(tmp / "t.safetensors", {"x": torch.arange(5)})
        write_manifest(tmp, {"key": "k1"})
    assert read_manifest(final) == {"key": "k1"}
    assert torch.equal(load_tensors(final / "t.safetensors")["x"], torch.arange(5))

    with atomic_dir(final) as tmp:  # a rebuild replaces the old directory in one step
        write_manifest(tmp, {"key": "k2"})
    assert read_manifest(final) == {"key": "k2"}
    assert not (final / "t.safetensors").exists()


def test_clean_scratch_removes_leftovers(tmp_path):
    (tmp_path / ".tmp-model-1234").mkdir()
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / ".tmp-file.bin-99").write_bytes(b"1")
    (tmp_path / "keep.json").write_text("{}")
    assert clean_scratch(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["keep.json", "x"]


def test_clean_scratch_spares_a_running_writer(tmp_path):
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / f".tmp-gradients-p{live.pid}-0123abcd").mkdir()  # another process, writing
        (tmp_path / f".tmp-gradients-p{os.getpid()}-0123abcd").mkdir()  # this one
        (tmp_path / f".tmp-gradients-p{dead}-0123abcd").mkdir()  # killed
        (tmp_path / "model").mkdir()  # the replace finished: its old copy is garbage
        (tmp_path / f".old-model-p{dead}-89abcdef").mkdir()
        assert clean_scratch(tmp_path) == 2
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [f".tmp-gradients-p{live.pid}-0123abcd", f".tmp-gradients-p{os.getpid()}-0123abcd", "model"]
        )
    finally:
        live.kill()
        live.wait()
    assert clean_scratch(tmp_path) == 1


def test_atomic_dir_scratch_carries_the_pid(tmp_path):
    import os

    with atomic_dir(tmp_path / "out") as tmp:
        assert tmp.name.startswith(".tmp-out-p") and f"-p{os.getpid()}-" in tmp.name
        assert clean_scratch(tmp_path) == 0 and tmp.exists()


def test_atomic_dir_puts_the_old_copy_back_when_the_second_rename_fails(tmp_path, monkeypatch):
    import os

    from loupe.storage import artifacts

    final = tmp_path / "step"
    with atomic_dir(final) as tmp:
        write_manifest(tmp, {"key": "old"})
    real, calls = os.replace, []

    def flaky(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # old aside is done; new into place fails
            raise OSError("disk gone")
        return real(src, dst)

    monkeypatch.setattr(artifacts.os, "replace", flaky)
    with pytest.raises(OSError):
        with atomic_dir(final) as tmp:
            write_manifest(tmp, {"key": "new"})
    monkeypatch.undo()
    assert read_manifest(final) == {"key": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step"]


KILL_BETWEEN_RENAMES = """
import os, sys
from pathlib import Path
from loupe.storage import artifacts

real, calls = os.replace, []

def killing(src, dst):
    real(src, dst)
    calls.append(dst)
    if Path(dst).name.startswith(".old-"):
        os._exit(9)  # a kill -9 right after the old copy went aside, before the new one is in place

artifacts.os.replace = killing
with artifacts.atomic_dir(Path(sys.argv[1])) as tmp:
    artifacts.write_manifest(tmp, {"key": "new"})
    (tmp / "data.bin").write_bytes(b"new")
"""


def test_a_kill_between_the_renames_of_a_replace_is_recovered_on_open(tmp_path):
    """A writer killed between its two renames leaves neither `step` nor a finished new copy; opening
    the workspace (clean_scratch) puts the old copy back whole."""
    import subprocess
    import sys

    final = tmp_path / "artifacts" / "step"
    with atomic_dir(final) as tmp:
        write_manifest(tmp, {"key": "old"})
        (tmp / "data.bin").write_bytes(b"old")
    done = subprocess.run([sys.executable, "-c", KILL_BETWEEN_RENAMES, str(final)], capture_output=True, text=True)
    assert done.returncode == 9, done.stderr
    assert not final.exists()  # the crash window: only the old copy (and the new scratch) remain
    assert any(p.name.startswith(".old-step-") for p in final.parent.iterdir())

    from loupe.services.workspace import Workspace
    from loupe.settings import Settings

    Workspace.open(Settings(workspace=tmp_path, database_url=None)).close()
    assert read_manifest(final) == {"key": "old"}
    assert (final / "data.bin").read_bytes() == b"old"
    assert sorted(p.name for p in final.parent.iterdir()) == ["step"]
