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
        (tmp_path / f".old-model-p{dead}-89abcdef").mkdir()
        assert clean_scratch(tmp_path) == 2
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [f".tmp-gradients-p{live.pid}-0123abcd", f".tmp-gradients-p{os.getpid()}-0123abcd"]
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
