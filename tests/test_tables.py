"""tables.read, the one reader of the CSVs the stages exchange: exact columns, whole rows, fixed values."""

from __future__ import annotations

import re

import pytest

from catsdogs import tables
from catsdogs.errors import UserError

CANDIDATE = {"rank": "1", "kind": "duplicate", "member": "PetImages/Dog/1.jpg", "subset": "validation",
             "label": "Dog", "predicted": "Dog", "probability": "0.9", "score": "2",
             "partner": "PetImages/Dog/2.jpg", "partner_subset": "train", "distance": "2"}


def write(path, header, *rows, delimiter=","):
    path.write_text("".join(delimiter.join(row) + "\n" for row in [header, *rows]), encoding="utf-8")
    return path


def test_rows_come_back_as_dicts_in_file_order_with_their_line_numbers(tmp_path):
    label = CANDIDATE | {"kind": "label", "partner": "", "partner_subset": "", "distance": ""}
    path = write(tmp_path / "c.csv", tables.CANDIDATES, CANDIDATE.values(), label.values())
    assert tables.read(path, tables.CANDIDATES, "rerun") == [CANDIDATE, label]
    assert [n for n, _ in tables.read(path, tables.CANDIDATES, "rerun", numbered=True)] == [2, 3]


def test_a_tab_separated_history_reads_too(tmp_path):
    path = write(tmp_path / "loss.tsv", ["step", "loss"], ["1", "0.5"], delimiter="\t")
    assert tables.read(path, ["step", "loss"], "rerun", delimiter="\t") == [{"step": "1", "loss": "0.5"}]


@pytest.mark.parametrize("column, value, allowed", [
    ("kind", "dupe", "'label', 'non_pet', 'duplicate'"),
    ("subset", "val", "'train', 'validation'"),
    ("partner_subset", "test", "'', 'train', 'validation'"),
])
def test_a_value_outside_its_columns_set_names_the_file_line_column_and_the_choices(tmp_path, column, value,
                                                                                  allowed):
    path = write(tmp_path / "c.csv", tables.CANDIDATES, CANDIDATE.values(), (CANDIDATE | {column: value}).values())
    message = f"{path}, line 3: {column} {value!r} is not one of {allowed}: run the review again"
    with pytest.raises(UserError, match=re.escape(message)):
        tables.read(path, tables.CANDIDATES, "run the review again")


def test_values_given_by_the_caller_are_checked_too(tmp_path):
    path = write(tmp_path / "split.csv", tables.SPLIT, ["Cat/1.jpg", "Bird", "train", "00"])
    with pytest.raises(UserError, match=re.escape(f"{path}, line 2: class 'Bird' is not one of 'Cat', 'Dog': fix")):
        tables.read(path, tables.SPLIT, "fix", values={"class": ["Cat", "Dog"]})


def test_a_wrong_header_or_a_short_row_is_one_line_naming_the_file(tmp_path):
    path = write(tmp_path / "roc.csv", ["fpr", "tpr"], ["0", "0"])
    with pytest.raises(UserError, match=re.escape(f"{path}: columns ['fpr', 'tpr'] are not ['fpr', 'tpr', "
                                                  "'threshold']: rerun the evaluate stage")):
        tables.read(path, tables.ROC, "rerun the evaluate stage")
    path = write(tmp_path / "roc.csv", tables.ROC, ["0", "0", "1"], ["0.5", "1"])
    with pytest.raises(UserError, match=re.escape(f"{path}, line 3: 2 values where 3 columns")):
        tables.read(path, tables.ROC, "rerun the evaluate stage")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(UserError, match="columns \\[\\] are not"):
        tables.read(tmp_path / "empty.csv", tables.ROC, "rerun")
    with pytest.raises(FileNotFoundError):  # the caller says which stage writes it
        tables.read(tmp_path / "missing.csv", tables.ROC, "rerun")
