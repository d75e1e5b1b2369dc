"""--resume after a kill in the middle of a checkpoint save: a cut last.pt / best.pt is replaced by the copy
kept after the epoch before, or refused by name when there is none (the end-to-end case, a real run killed
and its last.pt cut, is in test_toolchain.py). A .pt is a zip archive: plain zips stand in for it here."""

from __future__ import annotations

import os
import zipfile
from types import SimpleNamespace

import pytest

from inspector.training.train import TrainError, keep_checkpoints, restore_cut_checkpoints


def _pt(path, epoch: int) -> bytes:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", f"epoch {epoch}".encode() * 100)
    return path.read_bytes()


@pytest.mark.parametrize("cut, kept, restored", [
    ((), (), []),                       # nothing cut: nothing done
    (("last",), ("last",), ["last"]),   # last.pt cut while saving: the kept copy comes back
    (("last", "best"), ("last", "best"), ["last", "best"]),
])
def test_a_cut_checkpoint_is_restored_from_the_kept_copy(tmp_path, cut, kept, restored):
    whole = {}
    for name in ("last", "best"):
        whole[name] = _pt(tmp_path / f"{name}.pt", 1)
        if name in kept:
            (tmp_path / f"{name}.kept.pt").write_bytes(whole[name])
        if name in cut:
            (tmp_path / f"{name}.pt").write_bytes(whole[name][: len(whole[name]) // 2])
    notes = restore_cut_checkpoints(tmp_path)
    assert [n.split("/")[-1].split(".pt")[0] for n in notes] == restored
    for name in ("last", "best"):
        assert (tmp_path / f"{name}.pt").read_bytes() == whole[name]


def test_a_cut_checkpoint_without_a_kept_copy_is_named(tmp_path):
    data = _pt(tmp_path / "last.pt", 2)
    (tmp_path / "last.pt").write_bytes(data[:10])
    with pytest.raises(TrainError, match=r"last\.pt is not a whole checkpoint .* no earlier copy \(last\.kept\.pt\)"):
        restore_cut_checkpoints(tmp_path)
    assert TrainError.exit_code == 2


def test_each_save_keeps_a_whole_copy_and_only_of_what_changed(tmp_path):
    """on_model_save (ultralytics' trainer has .last and .best): a whole last.pt is copied, a cut one is
    not (the copy of the epoch before stays), and an unchanged best.pt is not copied again."""
    trainer = SimpleNamespace(last=tmp_path / "last.pt", best=tmp_path / "best.pt")
    e1 = _pt(trainer.last, 1)
    _pt(trainer.best, 1)
    keep_checkpoints(trainer)
    assert (tmp_path / "last.kept.pt").read_bytes() == e1 and (tmp_path / "best.kept.pt").exists()
    best_kept_at = (tmp_path / "best.kept.pt").stat().st_mtime_ns
    e2 = _pt(trainer.last, 2)  # epoch 2: last.pt saved again, best.pt not improved
    os.utime(trainer.last, ns=(best_kept_at + 1, best_kept_at + 1))
    keep_checkpoints(trainer)
    assert (tmp_path / "last.kept.pt").read_bytes() == e2
    assert (tmp_path / "best.kept.pt").stat().st_mtime_ns == best_kept_at  # not rewritten
    trainer.last.write_bytes(e2[: len(e2) // 2])  # epoch 3's save cut by a kill
    os.utime(trainer.last, ns=(best_kept_at + 2, best_kept_at + 2))
    keep_checkpoints(trainer)
    assert (tmp_path / "last.kept.pt").read_bytes() == e2  # the whole copy stays

