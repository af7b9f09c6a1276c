"""Files crysk writes get the permissions the umask asks for."""

import os
import stat

import pytest
import torch

from crysk._files import atomic_open
from crysk.checkpoints import load_checkpoint, save_checkpoint


@pytest.fixture
def umask():
    """Set a umask for one test and restore the previous one afterwards."""
    previous = os.umask(0o022)
    os.umask(previous)

    def set_(mask):
        os.umask(mask)

    yield set_
    os.umask(previous)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_checkpoint_mode_follows_umask(tmp_path, umask, mask, expected):
    umask(mask)
    path = save_checkpoint(tmp_path / "m.pt", {"w": torch.ones(2)})
    assert stat.S_IMODE(path.stat().st_mode) == expected
    # same mode as a file the user creates with open()
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    assert stat.S_IMODE(plain.stat().st_mode) == expected
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_atomic_open_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as fh:
            fh.write(b"partial")
            raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]
