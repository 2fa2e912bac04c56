"""catsdogs.atomic: a target is replaced whole or not at all, and the leftovers of a killed run are found."""

from __future__ import annotations

import csv
import json
import os
import stat

import pytest

from catsdogs import atomic


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_atomic_path_moves_the_file_onto_the_target_only_at_the_end(tmp_path):
    target = tmp_path / "deep" / "er" / "model.keras"  # missing folders are created
    with atomic.atomic_path(target, suffix=".keras") as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".model.keras.") and tmp.name.endswith(
            ".tmp.keras")
        assert tmp.exists() and not target.exists()
        tmp.write_bytes(b"new")
        assert not target.exists()  # not before the block ends
    assert target.read_bytes() == b"new"
    assert os.listdir(target.parent) == ["model.keras"]
    assert mode(target) == 0o666 & ~umask()  # the usual permissions, not mkstemp's private 0600


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_failed_block_leaves_the_old_target_and_no_temporary_file(tmp_path, error):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(error):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise error
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["metrics.json"]


def test_a_failed_block_without_a_previous_target_leaves_nothing(tmp_path):
    with pytest.raises(ValueError):
        with atomic.atomic_path(tmp_path / "x.csv"):
            raise ValueError
    assert os.listdir(tmp_path) == []


def test_atomic_dir_replaces_the_whole_folder(tmp_path):
    target = tmp_path / "checkpoints"
    (target / "sub").mkdir(parents=True)
    (target / "old.keras").write_text("old")
    (target / "sub" / "older").write_text("old")
    with atomic.atomic_dir(target) as tmp:
        assert tmp.is_dir() and tmp.parent == tmp_path and not any(tmp.iterdir())
        (tmp / "save_at_1.keras").write_text("new")
        assert (target / "old.keras").exists()
    assert sorted(p.name for p in target.iterdir()) == ["save_at_1.keras"]  # nothing of the old folder
    assert os.listdir(tmp_path) == ["checkpoints"]
    assert mode(target) == 0o777 & ~umask()


def test_a_failed_atomic_dir_leaves_the_old_folder(tmp_path):
    target = tmp_path / "clean"
    target.mkdir()
    (target / "kept.jpg").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_dir(target) as tmp:
            (tmp / "new.jpg").write_text("half")
            raise KeyboardInterrupt
    assert [p.name for p in target.iterdir()] == ["kept.jpg"] and os.listdir(tmp_path) == ["clean"]


def test_remove_leftovers_removes_only_the_temporaries_of_the_given_targets(tmp_path):
    for name in (".model.keras.abc123.tmp.keras", ".model.keras.x.tmp", ".train.json.q.tmp", "model.keras",
                 ".model.keras", ".model.keras.notes", ".other.keras.abc.tmp", "model.keras.abc.tmp"):
        (tmp_path / name).write_text("x")
    (tmp_path / ".clean.k2j.tmp").mkdir()
    (tmp_path / ".clean.k2j.tmp" / "a.jpg").write_text("x")
    atomic.remove_leftovers(tmp_path / "model.keras", tmp_path / "train.json", tmp_path / "clean",
                            tmp_path / "missing" / "x")  # a folder that does not exist is fine
    assert sorted(os.listdir(tmp_path)) == [".model.keras", ".model.keras.notes", ".other.keras.abc.tmp",
                                            "model.keras", "model.keras.abc.tmp"]


def test_leftovers_of_a_killed_block_are_what_remove_leftovers_removes(tmp_path):
    target = tmp_path / "model.keras"
    block = atomic.atomic_path(target, suffix=".keras")
    tmp = block.__enter__()  # entered, never exited: as if the process had been killed
    tmp.write_text("half")
    folder = atomic.atomic_dir(tmp_path / "checkpoints")
    folder.__enter__()
    assert len(os.listdir(tmp_path)) == 2
    atomic.remove_leftovers(target, tmp_path / "checkpoints")
    assert os.listdir(tmp_path) == []


def test_write_csv_has_the_header_rows_and_unix_line_endings(tmp_path):
    path = tmp_path / "log.csv"
    atomic.write_csv(path, ["path", "detail"], [["Cat/1.jpg", "zero-byte file"], ["Dog/a,b.jpg", 'say "hi"'],
                                                ("x", 2.5)])
    data = path.read_bytes()
    assert data == b'path,detail\nCat/1.jpg,zero-byte file\n"Dog/a,b.jpg","say ""hi"""\nx,2.5\n'
    assert list(csv.reader(data.decode().splitlines())) == [
        ["path", "detail"], ["Cat/1.jpg", "zero-byte file"], ["Dog/a,b.jpg", 'say "hi"'], ["x", "2.5"]]


def test_write_json_keeps_key_order_indents_and_ends_with_a_newline(tmp_path):
    path = tmp_path / "out" / "metrics.json"
    atomic.write_json(path, {"b": 1, "a": [1.5, "é"], "c": None})
    text = path.read_text(encoding="utf-8")
    assert text == '{\n  "b": 1,\n  "a": [\n    1.5,\n    "\\u00e9"\n  ],\n  "c": null\n}\n'
    assert list(json.loads(text)) == ["b", "a", "c"]


def test_write_text_is_utf8_and_replaces_the_target(tmp_path):
    path = tmp_path / "readme.txt"
    path.write_text("old")
    atomic.write_text(path, "chat → cat\n")
    assert path.read_bytes() == "chat → cat\n".encode("utf-8")
    assert os.listdir(tmp_path) == ["readme.txt"]
