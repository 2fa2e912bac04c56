"""The exclusion list: read strictly, appended without duplicates, and a dependency of the filter stage
through the real `dvc` CLI."""

from __future__ import annotations

import csv
import json
import re

import pytest

from catsdogs import tables
from catsdogs.data import exclusions
from catsdogs.errors import UserError
from conftest import TINY_DATA, dvc, run, set_params

ENTRY = exclusions.Exclusion


def test_append_creates_the_list_then_skips_what_it_already_lists(tmp_path):
    path = tmp_path / "data/exclude.csv"
    added, already = exclusions.append(path, [ENTRY("PetImages/Cat/1.jpg", "label: given Cat, 0.97 Dog", "ana")])
    assert [e.member for e in added] == ["PetImages/Cat/1.jpg"] and already == []
    added, already = exclusions.append(path, [ENTRY("PetImages/Cat/1.jpg", "again"),
                                              ENTRY("PetImages/Dog/2.jpg", "non_pet"),
                                              ENTRY("PetImages/Dog/2.jpg", "twice in one call")])
    assert [e.member for e in added] == ["PetImages/Dog/2.jpg"]
    assert [e.member for e in already] == ["PetImages/Cat/1.jpg", "PetImages/Dog/2.jpg"]
    assert list(csv.reader(path.open())) == [tables.EXCLUDE, ["PetImages/Cat/1.jpg", "label: given Cat, 0.97 Dog", "ana", ""],
                                             ["PetImages/Dog/2.jpg", "non_pet", "", ""]]
    assert exclusions.read(path) == [ENTRY("PetImages/Cat/1.jpg", "label: given Cat, 0.97 Dog", "ana"),
                                     ENTRY("PetImages/Dog/2.jpg", "non_pet")]


def test_append_keeps_hand_written_lines_as_they_are(tmp_path):
    path = tmp_path / "exclude.csv"
    path.write_text("member,reason,who,when\n  PetImages/Cat/3.jpg , no pet in it ,me,today")  # no final newline
    exclusions.append(path, [ENTRY("PetImages/Cat/3.jpg", "dup"), ENTRY("PetImages/Cat/4.jpg", "dup")])
    assert path.read_text() == ("member,reason,who,when\n  PetImages/Cat/3.jpg , no pet in it ,me,today\n"
                                "PetImages/Cat/4.jpg,dup,,\n")


@pytest.mark.parametrize("member", ["/abs/x.jpg", "../x.jpg", "PetImages/../../x.jpg", "PetImages\\Cat\\1.jpg"])
def test_append_refuses_names_that_can_never_be_members(tmp_path, member):
    path = tmp_path / "exclude.csv"
    with pytest.raises(UserError, match="cannot be excluded"):
        exclusions.append(path, [ENTRY(member, "x")])
    assert not path.exists()


def test_append_refuses_to_add_to_a_broken_list(tmp_path):
    path = tmp_path / "exclude.csv"
    path.write_text("member;reason\n")
    with pytest.raises(UserError, match="columns"):
        exclusions.append(path, [ENTRY("PetImages/Cat/1.jpg", "x")])
    assert path.read_text() == "member;reason\n"


def test_the_list_is_a_filter_dependency_through_dvc(repo):
    """A listed member is dropped, `dvc status` sees a change of the list, a typo is an error naming it."""
    set_params(repo, TINY_DATA)
    dvc("repro", "filter", cwd=repo)
    before = json.loads((repo / "metrics/filter.json").read_text())
    assert before["dropped_per_reason"]["excluded"] == 0
    kept = sorted((repo / "data/clean/Dog").glob("*.jpg"))[0]
    member = f"PetImages/Dog/{kept.name}"

    exclusions.append(repo / "data/exclude.csv", [ENTRY(member, "label: looks like a cat", "test")])
    status = dvc("status", "filter", cwd=repo).stdout
    assert "changed deps" in status and "data/exclude.csv" in status
    dvc("repro", "filter", cwd=repo)
    after = json.loads((repo / "metrics/filter.json").read_text())
    assert after["dropped_per_reason"]["excluded"] == 1 and after["kept"] == before["kept"] - 1
    assert not (repo / "data/clean" / member).exists()
    dropped = {row["member"]: row for row in csv.DictReader((repo / "metrics/filter_dropped.csv").open())}
    assert dropped[member]["reason"] == "excluded" and dropped[member]["detail"] == "label: looks like a cat"
    run("git", "add", "-A", cwd=repo)
    run("git", "commit", "-qm", "exclude one", cwd=repo)
    diff = dvc("metrics", "diff", "HEAD~1", cwd=repo).stdout  # the list's effect, against the commit before
    assert "dropped_per_reason.excluded" in diff

    (repo / "data/exclude.csv").write_text("member,reason,who,when\nPetImages/Dog/99999.jpg,typo,,\n")
    result = dvc("repro", "filter", cwd=repo, check=False)
    assert result.returncode != 0
    assert ("error: data/exclude.csv: PetImages/Dog/99999.jpg is not a class image of "
            "data/raw/archive") in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("text, message", [
    ("", None),  # an empty file lists nothing
    ("\ufeffmember, reason ,who,when\r\nPetImages/Cat/1.jpg,no pet,,\r\n,,,\r\n", None),  # a spreadsheet's
    ("member,reason\nPetImages/Cat/1.jpg,x\n", "columns ['member', 'reason'] are not ['member', 'reason', 'who', "
     "'when']: member and reason are required, who and when may be empty"),
    ("member,reason,who,when\n\nPetImages/Cat/1.jpg,x\n", "line 3: 2 values where 4 columns"),
    ("member,reason,who,when\n,x,,\n", "line 2: empty member"),
])
def test_read_takes_what_a_person_may_save_and_names_the_line_of_a_mistake(tmp_path, text, message):
    path = tmp_path / "exclude.csv"
    path.write_text(text, encoding="utf-8", newline="")
    if message is None:
        assert [e.member for e in exclusions.read(path)] == (["PetImages/Cat/1.jpg"] if text else [])
    else:
        with pytest.raises(UserError, match=re.escape(f"{path}{': ' if message.startswith('columns') else ', '}{message}")):
            exclusions.read(path)
