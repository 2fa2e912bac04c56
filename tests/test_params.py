import re
from pathlib import Path

import pydantic
import pytest
import yaml

from catsdogs import params
from catsdogs.errors import UserError
from conftest import COMMITTED_PARAMS_TEXT, ROOT, committed_params


def raw() -> dict:
    return committed_params()


def error_for(change) -> str:
    data = raw()
    change(data)
    with pytest.raises(params.ParamsError) as info:
        params.parse(data)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_committed_params_are_the_tutorial():
    p = params.parse(yaml.safe_load(COMMITTED_PARAMS_TEXT))
    assert p.epochs == 25 and p.seed == 1337
    assert p.download.source == "url" and p.download.size == 824_887_076
    assert p.data.image_size == [180, 180] and p.data.validation_split == 0.2 and p.data.batch_size == 128
    assert (p.model.entry_width, p.model.block_widths, p.model.exit_width) == (128, [256, 512, 728], 1024)
    assert p.model.dropout == 0.25 and p.train.learning_rate == 3e-4
    assert p.train.lr_schedule == "cosine"  # the one recipe change: measured better (README), one -S away
    assert p.train.augment.flip and p.train.augment.rotation == 0.1


def test_demo_overrides_are_valid():
    from catsdogs.commands.demo import merge

    demo = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())
    p = params.parse(merge(raw(), demo))
    assert p.download.source == "synthetic"


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda d: d.update(epochs="5"), ["epochs = '5'", "integer"]),
        (lambda d: d.update(epochs=-1), ["epochs = -1", "greater than 0"]),
        (lambda d: d.update(epochs=2.5), ["epochs = 2.5", "integer"]),
        (lambda d: d["data"].update(batch_size=0), ["data.batch_size = 0", "greater than 0"]),
        (lambda d: d["data"].update(image_size=[180]), ["data.image_size = [180]", "2"]),
        (lambda d: d["data"].update(image_size=[180, -5]), ["data.image_size.1 = -5", "greater than 0"]),
        (lambda d: d["data"].update(validation_split=1.0), ["data.validation_split = 1.0", "less than 1"]),
        (lambda d: d["data"].update(validation_split=0), ["data.validation_split = 0", "greater than 0"]),
        (lambda d: d.update(epoch=3), ["unknown key 'epoch'", "allowed here: epochs, seed"]),
        (lambda d: d["train"].update(lr=0.1), ["unknown key 'train.lr'", "learning_rate"]),
        (lambda d: d["filter"].update(method="magic"), ["filter.method = 'magic'", "'decode' or 'jfif'"]),
        (lambda d: d["download"].update(source="ftp"), ["download.source = 'ftp'", "'url' or 'synthetic'"]),
        (lambda d: d["train"].update(learning_rate=0.0), ["train.learning_rate = 0.0", "greater than 0"]),
        (lambda d: d["train"].update(learning_rate="3e-4"), ["train.learning_rate = '3e-4'", "without quotes"]),
        (lambda d: d["train"].update(lr_schedule="step"), ["train.lr_schedule = 'step'", "constant"]),
        (lambda d: d.pop("seed"), ["missing required key 'seed'"]),
        (lambda d: d["download"].update(sha256="abc"), ["download.sha256 = 'abc'", "pattern"]),
        (lambda d: d["train"]["augment"].update(flip=1), ["train.augment.flip = 1", "boolean"]),
        (lambda d: d["download"]["synthetic"].update(side_range=[64, 32]), ["[smallest, largest]"]),
        (lambda d: d["download"]["synthetic"].update(side_range=[8, 32]), ["at least 16 pixels"]),
        (lambda d: d["filter"].update(max_pixels=0), ["filter.max_pixels = 0", "greater than 0"]),
    ],
)
def test_bad_values_name_key_value_and_rule(change, expected):
    message = error_for(change)
    assert message.startswith("params.yaml: ")
    for part in expected:
        assert part in message


def test_several_problems_are_counted_in_one_line():
    message = error_for(lambda d: d.update(epochs=0, seed=-1))
    assert "(and 1 more problem)" in message


def test_malformed_yaml_names_the_line(tmp_path: Path):
    path = tmp_path / "params.yaml"
    path.write_text("epochs: 3\ndata: [unclosed\n")
    with pytest.raises(params.ParamsError, match=r"malformed YAML at line \d+, column \d+"):
        params.load(path)


def test_missing_file_and_non_mapping(tmp_path: Path):
    with pytest.raises(params.ParamsError, match="file not found"):
        params.load(tmp_path / "params.yaml")
    (tmp_path / "params.yaml").write_text("- a list\n")
    with pytest.raises(params.ParamsError, match="expected a mapping"):
        params.load(tmp_path / "params.yaml")


def test_a_rule_across_fields_names_the_fields_never_the_whole_file():
    message = error_for(lambda d: d.update(epochs=15) or d["train"].update(warmup_epochs=25))
    assert message == "params.yaml: train.warmup_epochs (25) must be smaller than epochs (15)"
    message = error_for(lambda d: d["download"]["synthetic"].update(side_range=[64, 32]))
    assert message == ("params.yaml: download.synthetic: side_range must be [smallest, largest] side, "
                       "got [64, 32]")


@pytest.mark.parametrize("old, new, value", [
    ("download.synthetic.image_size", "download.synthetic.side_range", [96, 160]),
    ("data.split", "data.split_method", "keras"),
    ("data.cache", "data.cache_mode", "mmap"),
])
def test_a_renamed_key_names_its_new_name(old, new, value):
    def rename(d):
        *sections, leaf = old.split(".")
        node = d
        for section in sections:
            node = node[section]
        node.pop(new.split(".")[-1])
        node[leaf] = value

    assert error_for(rename) == f"params.yaml: {old} was renamed to {new}: rename the key (its values are unchanged)"


def test_max_pixels_defaults_to_pillows_own_limit():
    from catsdogs.data import images

    assert params.parse(raw()).filter.max_pixels is None
    assert images.MAX_PIXELS == 89_478_485  # what the docs quote


def test_malformed_yaml_names_the_line_and_column_counted_from_1(tmp_path: Path):
    path = tmp_path / "params.yaml"
    path.write_text("epochs: 3\nseed: 1\ndata:\n  batch_size: [1, 2\n  x: 1\n")
    with pytest.raises(params.ParamsError) as info:
        params.load(path)
    assert str(info.value).startswith(f"{path}: malformed YAML at line 5, column 4: ")


@pytest.mark.parametrize("change", [
    lambda d: d.update(epochs=25) or d["train"].update(warmup_epochs=24),  # warm-up may fill all but one epoch
    lambda d: d["download"]["synthetic"].update(side_range=[16, 16]),  # the smallest allowed side
    lambda d: d["data"].update(validation_split=0.999),
    lambda d: d["model"].update(dropout=0.0),
])
def test_values_at_the_edge_of_what_is_allowed_are_accepted(change):
    data = committed_params()
    change(data)
    params.parse(data)


def test_several_problems_are_counted_in_the_plural():
    data = committed_params()
    data.update(epochs=0, seed=-1)
    data["data"].update(batch_size=0)
    with pytest.raises(params.ParamsError, match=r"\(and 2 more problems\)$"):
        params.parse(data)


def test_the_export_formats_need_the_tensorflow_backend():
    message = error_for(lambda d: d["export"].update(backend="jax"))
    assert message == ("params.yaml: export: formats savedmodel, onnx need backend: tensorflow (SavedModel and "
                       "ONNX are TensorFlow's exports); with backend: jax, set formats: []")
    data = raw()
    data["export"].update(backend="jax", formats=[])
    assert params.parse(data).export.backend == "jax"  # the model file alone, where TensorFlow is not installed


# ---------------------------------------------------------------------------------------------------------
# A stage's view: the keys it declares, and no other


def view(*declared: str, stage="evaluate") -> params.View:
    return params.View(params.parse(raw()), declared, stage)


def test_a_view_gives_the_declared_keys_and_whole_sections():
    seen = view("seed", "data.batch_size", "train.augment", "model")
    assert seen.seed == 1337 and seen.data.batch_size == 128
    assert seen.train.augment == params.parse(raw()).train.augment
    assert seen.model.block_widths == [256, 512, 728]  # a section declared whole is the section itself


@pytest.mark.parametrize("read, key", [
    (lambda v: v.epochs, "epochs"),
    (lambda v: v.data.image_size, "data.image_size"),  # a sibling of a declared key
    (lambda v: v.train.augment, "train.augment"),
    (lambda v: v.model_dump(), "model_dump"),  # no way around the declaration
])
def test_any_other_key_is_refused_naming_it_and_the_declaration(read, key):
    seen = view("data.batch_size", "data.cache_mode", "train.backend")
    with pytest.raises(params.UndeclaredParam) as info:
        read(seen)
    assert str(info.value) == (
        f"the evaluate stage reads params key '{key}', which it does not declare: add it to PARAMS in "
        "catsdogs.stages.evaluate and to the stage's params in dvc.yaml "
        "(declared: data.batch_size, data.cache_mode, train.backend)")
    assert isinstance(info.value, AttributeError) and not isinstance(info.value, UserError)


def test_a_view_is_read_only():
    seen = view("seed", "data")
    with pytest.raises(AttributeError, match="read-only"):
        seen.seed = 1
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        seen.data.batch_size = 1  # a section declared whole: its frozen model refuses it
    assert seen.seed == 1337


@pytest.mark.parametrize("declared, problem", [
    (("data.batch_sise",), "'data.batch_sise', which params.yaml has no place for"),
    (("seed.value",), "'seed.value', which params.yaml has no place for"),
    (("data", "data.batch_size"), "'data.batch_size' twice"),
    (("data.batch_size", "data"), "'data' twice"),
])
def test_a_declaration_params_yaml_cannot_satisfy_is_a_programming_error(declared, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        view(*declared)


def test_values_are_the_declared_keys_as_plain_data():
    full = params.parse(raw())
    assert view("data.batch_size", "train.backend").values() == {"data": {"batch_size": 128},
                                                                  "train": {"backend": "tensorflow"}}
    training = params.View(full, params.TRAINING + ("export",), "export")
    assert training.values(params.TRAINING) == full.model_dump(include=set(params.TRAINING))  # the resume key's
    assert list(training.values(params.TRAINING)) == list(params.TRAINING)
    with pytest.raises(params.UndeclaredParam, match="'filter'"):
        training.values(["filter"])
    with pytest.raises(params.UndeclaredParam, match="'data'"):
        view("data.batch_size").values(["data"])  # a section whole, when only part of it is declared


def test_a_stage_validates_the_whole_file_before_its_view(tmp_path: Path):
    data = raw()
    data["filter"].update(workers=-1)  # a key the evaluate stage does not read
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(params.ParamsError, match="filter.workers = -1"):
        params.for_stage("evaluate", ("data.batch_size",), tmp_path / "params.yaml")
    data["filter"].update(workers=0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    assert params.for_stage("evaluate", ("data.batch_size",), tmp_path / "params.yaml").data.batch_size == 128


def test_synthetic_rates_the_generator_cannot_meet_are_one_line():
    message = error_for(lambda d: d["download"]["synthetic"].update(images_per_class=10, pathology_rate=0.0,
                                                                    duplicate_rate=0.45, flipped_rate=0.1))
    assert message == ("params.yaml: download.synthetic: duplicate_rate 0.45 asks for 9 duplicates of the 20 images, "
                       "each with a good original of its class besides; 18 are left by the other rates, room for 8: "
                       "lower the rates")


def test_a_synthetic_side_too_large_to_draw_is_one_line():
    message = error_for(lambda d: d["download"]["synthetic"].update(side_range=[96, 16000]))
    assert message == ("params.yaml: download.synthetic: side_range must stay within 4096 pixels per side, "
                       "got [96, 16000]")


@pytest.mark.parametrize("layout, message", [
    ({"format": "rar"}, "params.yaml: download.synthetic.format = 'rar': input should be 'zip' or 'tar.gz'"),
    ({"classes": ["Cat"]}, "params.yaml: download.synthetic: classes must be a list of 2 to 12 folder names "
                           "(no '/', '\\', ':' or leading '.'), got ['Cat']"),
    ({"top_folder": "a/b"}, "params.yaml: download.synthetic: top_folder must be one folder name "
                            "(no '/', '\\', ':' or leading '.') or null, got 'a/b'"),
    ({"classes": ["A", "B", "C"], "images_per_class": 2, "pathology_rate": 0.0, "duplicate_rate": 0.45},
     "params.yaml: download.synthetic: duplicate_rate 0.45 asks for 3 duplicates of the 6 images, each with a good "
     "original of its class besides; 6 are left by the other rates, room for 2: lower the rates"),
])
def test_a_synthetic_layout_the_generator_cannot_write_is_one_line(layout, message):
    assert error_for(lambda d: d["download"]["synthetic"].update(layout)) == message


def test_the_synthetic_layout_defaults_to_the_real_archives():
    spec = params.load().download.synthetic
    assert (spec.classes, spec.format, spec.top_folder) == (["Cat", "Dog"], "zip", "PetImages")
    fine = dict(classes=["Pointy", "Floppy", "Round"], format="tar.gz", top_folder=None)
    assert params.check_synthetic(10, [16, 20], 0.06, 0, **fine) == (16, 20)


def test_numbers_with_an_exponent_are_numbers_as_dvc_reads_and_writes_them(tmp_path: Path):
    """DVC writes `-S train.learning_rate=0.00001` as `1e-05`, which PyYAML alone reads as text."""
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    path.write_text("a: 3e-4\nb: 1.0e-3\nc: '3e-4'\nd: 12\ne: 1e5\n")
    assert params.read_yaml(path) == {"a": 3e-4, "b": 1e-3, "c": "3e-4", "d": 12, "e": 1e5}
    apply_overrides(str(path), ["a=0.00001"])
    assert "a: 1e-05" in path.read_text() and params.read_yaml(path)["a"] == 1e-05
