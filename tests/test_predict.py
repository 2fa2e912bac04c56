"""`catsdogs predict` with a tiny real model: sentences, JSON, and every kind of bad input."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from catsdogs.commands import cli
from catsdogs.serving import predict as predict_lib
from catsdogs.training import model as model_lib


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    widths = SimpleNamespace(entry_width=4, block_widths=[8], exit_width=8, dropout=0.25, bn_momentum=0.9)
    model = model_lib.build((32, 32), 2, widths, SimpleNamespace(flip=True, rotation=0.1), seed=1)
    model.save(folder / "model.keras")
    (folder / "classes.json").write_text('["Cat", "Dog"]')
    return folder


def photo(path, size=(50, 40), fmt="JPEG"):
    pixels = np.random.default_rng(len(str(path))).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, fmt)
    return path


def predict(trained, *args, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["predict", "--model", str(trained / "model.keras"), "--classes", str(trained / "classes.json"),
                  *map(str, args)])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def percentages(line: str) -> list[float]:
    return [float(word.rstrip("%")) for word in line.split() if word.endswith("%")]


def test_one_sentence_per_image_with_percentages_summing_to_100(trained, tmp_path, capsys):
    a, b = photo(tmp_path / "a.jpg"), photo(tmp_path / "b.png", fmt="PNG")
    code, out, _ = predict(trained, a, b, capsys=capsys)
    assert code == 0
    lines = out.strip().splitlines()
    assert [line.split(": ")[0] for line in lines] == [str(a), str(b)]
    for line in lines:
        assert "This image is " in line and "% cat and " in line and line.endswith("% dog.")
        assert round(sum(percentages(line)), 2) == 100


@pytest.mark.parametrize("probabilities, said", [
    ({"Cat": 0.999951, "Dog": 0.0000501}, "99.99% cat and 0.01% dog"),  # one by one: 100.00% and 0.01%
    ({"Cat": 0.9999498, "Dog": 5.0172184e-05}, "99.99% cat and 0.01% dog"),  # float32's sigmoid, as predicted
    ({"Cat": 0.5, "Dog": 0.5}, "50.00% cat and 50.00% dog"),
    ({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, "33.34% a, 33.33% b and 33.33% c"),  # ties: label order
])
def test_the_percentages_a_sentence_names_add_up_to_exactly_100(probabilities, said):
    assert predict_lib.Result("x.jpg", probabilities).sentence() == f"x.jpg: This image is {said}."


def test_json_output(trained, tmp_path, capsys):
    code, out, _ = predict(trained, "--json", photo(tmp_path / "a.jpg"), capsys=capsys)
    assert code == 0
    [result] = json.loads(out)
    assert set(result["probabilities"]) == {"Cat", "Dog"}
    assert sum(result["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    assert result["predicted"] == max(result["probabilities"], key=result["probabilities"].get)


def test_class_names_come_from_training(trained, tmp_path, capsys):
    (tmp_path / "model.keras").write_bytes((trained / "model.keras").read_bytes())
    (tmp_path / "classes.json").write_text('["Hamster", "Parrot"]')
    with pytest.raises(SystemExit):
        cli.main(["predict", "--model", str(tmp_path / "model.keras"), "--classes", str(tmp_path / "classes.json"),
                  str(photo(tmp_path / "a.jpg"))])
    assert "% hamster and " in capsys.readouterr().out


def test_folder_with_bad_files_reports_them_and_predicts_the_rest(trained, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    photo(folder / "good.jpg")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    code, out, err = predict(trained, folder, capsys=capsys)
    assert code == 2
    assert out.strip().splitlines()[0].startswith(f"{folder / 'good.jpg'}: This image is")
    assert f"{folder / 'empty.jpg'}: skipped: empty" in err
    assert f"{folder / 'notes.txt'}: skipped: not_an_image" in err


@pytest.mark.parametrize("case, message", [
    ("missing path", "no such file or folder"),
    ("folder without images", "no image files in this folder"),
    ("non-image", "skipped: not_an_image"),
    ("no model", "model not found"),
    ("corrupt model", "not a loadable Keras model"),
    ("huge image", "skipped: too_large"),
])
def test_bad_input_is_a_clear_message_and_exit_code_2(trained, tmp_path, capsys, monkeypatch, case, message):
    target = photo(tmp_path / "ok.jpg")
    model_dir = trained
    if case == "missing path":
        target = tmp_path / "nope.jpg"
    elif case == "folder without images":
        target = tmp_path / "empty_folder"
        target.mkdir()
        (target / "readme.txt").write_text("x")
    elif case == "non-image":
        target = tmp_path / "fake.jpg"
        target.write_text("hello")
    elif case in ("no model", "corrupt model"):
        model_dir = tmp_path / "models"
        model_dir.mkdir()
        (model_dir / "classes.json").write_text('["Cat", "Dog"]')
        if case == "corrupt model":
            (model_dir / "model.keras").write_bytes(b"PK\x03\x04 definitely not a keras file")
    elif case == "huge image":
        monkeypatch.setattr("catsdogs.data.images.MAX_PIXELS", 49 * 40)
        monkeypatch.setattr("catsdogs.serving.predict.predict.__defaults__", (64, 49 * 40))
    code, out, err = predict(model_dir, target, capsys=capsys)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_folder_of_odd_files_reports_each_and_predicts_the_good_ones(trained, tmp_path, capsys):
    import os
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    folder = tmp_path / "odd"
    folder.mkdir()
    photo(folder / "a_good.jpg")
    photo(folder / "b_png_named.jpg", fmt="PNG")
    truncated = (folder / "a_good.jpg").read_bytes()
    (folder / "c_truncated.jpg").write_bytes(truncated[: len(truncated) // 2])
    (folder / "d_bomb.png").write_bytes(  # declares 100000 x 100000 pixels in about 60 bytes
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(bytes(16))) + chunk(b"IEND", b""))
    (folder / "e_text.jpg").write_text("not an image")
    os.mkfifo(folder / "f_pipe.jpg")  # reading it would block forever
    code, out, err = predict(trained, folder, capsys=capsys)
    assert code == 2
    assert [line.split(": ")[0] for line in out.strip().splitlines()] == [
        str(folder / "a_good.jpg"), str(folder / "b_png_named.jpg")]
    assert f"{folder / 'c_truncated.jpg'}: skipped: truncated" in err
    assert f"{folder / 'd_bomb.png'}: skipped: too_large" in err
    assert f"{folder / 'e_text.jpg'}: skipped: not_an_image" in err
    assert f"{folder / 'f_pipe.jpg'}: skipped: not a regular file" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------------------------------------------------
# Pinned values: models of stock layers whose outputs are known, so the mapping from outputs to class names
# is checked number by number (a swap of the classes keeps every sentence's shape and its sum at 100%).

LOG3 = float(np.log(3.0))


def known_model(folder, logits_black, logits_white, class_names):
    """uint8 image -> Rescaling -> GlobalAveragePooling2D -> Dense: an image of one grey level g (0-255) gets
    the logits logits_black + (logits_white - logits_black) * g / 255, exactly (up to float32)."""
    import keras

    black, white = np.asarray(logits_black, dtype="float64"), np.asarray(logits_white, dtype="float64")
    inputs = keras.Input((8, 8, 3), dtype="uint8")
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    dense = keras.layers.Dense(len(black))
    model = keras.Model(inputs, dense(x))
    dense.set_weights([np.tile((white - black) / 3, (3, 1)), black])  # three channels of 1.0 add up to white
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    (folder / "classes.json").write_text(json.dumps(class_names))
    return folder


def flat(path, level, fmt, size=(30, 20)):
    Image.new("RGB", size, (level, level, level)).save(path, fmt)
    return path


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    """Two classes, one logit: white -> log(3) (p(Dog) = 0.75), black -> -log(3) (p(Dog) = 0.25)."""
    return known_model(tmp_path_factory.mktemp("binary"), [-LOG3], [LOG3], ["Cat", "Dog"])


def test_a_known_logit_gives_the_exact_sentence_with_cat_and_dog_in_their_places(binary, tmp_path, capsys):
    white, black = flat(tmp_path / "white.png", 255, "PNG"), flat(tmp_path / "black.jpg", 0, "JPEG")
    white_jpeg = flat(tmp_path / "white.jpg", 255, "JPEG", size=(13, 41))
    code, out, err = predict(binary, white, black, white_jpeg, capsys=capsys)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"{white}: This image is 25.00% cat and 75.00% dog.",
        f"{black}: This image is 75.00% cat and 25.00% dog.",
        f"{white_jpeg}: This image is 25.00% cat and 75.00% dog.",
    ]


def test_a_known_logit_gives_the_exact_probabilities_in_json(binary, tmp_path, capsys):
    white, black = flat(tmp_path / "white.png", 255, "PNG"), flat(tmp_path / "black.png", 0, "PNG")
    grey = flat(tmp_path / "grey.png", 51, "PNG")  # logit -log(3) + 2 log(3) / 5
    code, out, _ = predict(binary, "--json", white, black, grey, capsys=capsys)
    assert code == 0
    p_grey = 1 / (1 + np.exp(LOG3 - 2 * LOG3 * 51 / 255))
    assert json.loads(out) == [
        {"path": str(white), "predicted": "Dog", "probabilities": {"Cat": 0.25, "Dog": 0.75}},
        {"path": str(black), "predicted": "Cat", "probabilities": {"Cat": 0.75, "Dog": 0.25}},
        {"path": str(grey), "predicted": "Cat",
         "probabilities": {"Cat": pytest.approx(1 - p_grey, abs=2e-6), "Dog": pytest.approx(p_grey, abs=2e-6)}},
    ]


def test_a_folder_is_predicted_in_sorted_order_with_each_file_its_own_probabilities(binary, tmp_path, capsys):
    folder = tmp_path / "photos"
    (folder / "b").mkdir(parents=True)
    flat(folder / "b" / "a_white.png", 255, "PNG")
    flat(folder / "a_black.png", 0, "PNG")
    flat(folder / "c_white.jpg", 255, "JPEG")
    (folder / "b" / "broken.jpg").write_bytes(b"")
    code, out, err = predict(binary, "--json", folder, capsys=capsys)
    assert code == 2 and err == f"{folder / 'b' / 'broken.jpg'}: skipped: empty: zero-byte file\n"
    assert [(r["path"], r.get("probabilities")) for r in json.loads(out)] == [
        (str(folder / "a_black.png"), {"Cat": 0.75, "Dog": 0.25}),
        (str(folder / "b" / "a_white.png"), {"Cat": 0.25, "Dog": 0.75}),
        (str(folder / "b" / "broken.jpg"), None),
        (str(folder / "c_white.jpg"), {"Cat": 0.25, "Dog": 0.75}),
    ]


def test_three_classes_get_the_softmax_of_known_logits_most_likely_first(tmp_path, capsys):
    # white: logits (0, log 2, log 5) -> (1, 2, 5) / 8; black: (log 5, log 2, 0) -> (5, 2, 1) / 8
    three = known_model(tmp_path / "three", np.log([5.0, 2.0, 1.0]), np.log([1.0, 2.0, 5.0]),
                        ["Bird", "Cat", "Dog"])
    white, black = flat(tmp_path / "white.png", 255, "PNG"), flat(tmp_path / "black.png", 0, "PNG")
    code, out, _ = predict(three, white, black, capsys=capsys)
    assert code == 0
    assert out.splitlines() == [f"{white}: This image is 62.50% dog, 25.00% cat and 12.50% bird.",
                                f"{black}: This image is 62.50% bird, 25.00% cat and 12.50% dog."]
    code, out, _ = predict(three, "--json", white, black, capsys=capsys)
    assert json.loads(out) == [
        {"path": str(white), "predicted": "Dog", "probabilities": {"Bird": 0.125, "Cat": 0.25, "Dog": 0.625}},
        {"path": str(black), "predicted": "Bird", "probabilities": {"Bird": 0.625, "Cat": 0.25, "Dog": 0.125}},
    ]


@pytest.fixture(scope="module")
def five(tmp_path_factory):
    """Five classes: white -> (1, 2, 3, 4, 10) / 20, black -> (8, 1, 1, 6, 4) / 20 (a tie of ocelot and puma)."""
    return known_model(tmp_path_factory.mktemp("five"), np.log([8.0, 1, 1, 6, 4]), np.log([1.0, 2, 3, 4, 10]),
                       ["Lynx", "Ocelot", "Puma", "Tabby", "Tiger"])


def test_more_than_two_classes_name_the_top_three_most_likely_first(five, tmp_path, capsys):
    white, black = flat(tmp_path / "white.png", 255, "PNG"), flat(tmp_path / "black.png", 0, "PNG")
    code, out, err = predict(five, white, black, capsys=capsys)
    assert (code, err) == (0, "")
    assert out.splitlines() == [f"{white}: This image is 50.00% tiger, 20.00% tabby and 15.00% puma.",
                                f"{black}: This image is 40.00% lynx, 30.00% tabby and 20.00% tiger."]


@pytest.mark.parametrize("top, white_says, black_says", [
    ("1", "50.00% tiger", "40.00% lynx"),
    ("2", "50.00% tiger and 20.00% tabby", "40.00% lynx and 30.00% tabby"),
    ("5", "50.00% tiger, 20.00% tabby, 15.00% puma, 10.00% ocelot and 5.00% lynx",
     "40.00% lynx, 30.00% tabby, 20.00% tiger, 5.00% ocelot and 5.00% puma"),  # a tie: label order
])
def test_top_k_names_the_k_most_likely(five, tmp_path, capsys, top, white_says, black_says):
    white, black = flat(tmp_path / "white.png", 255, "PNG"), flat(tmp_path / "black.png", 0, "PNG")
    code, out, _ = predict(five, "--top", top, white, black, capsys=capsys)
    assert code == 0
    assert out.splitlines() == [f"{white}: This image is {white_says}.", f"{black}: This image is {black_says}."]


def test_json_lists_every_class_whatever_the_top(five, tmp_path, capsys):
    white = flat(tmp_path / "white.png", 255, "PNG")
    code, out, _ = predict(five, "--json", "--top", "1", white, capsys=capsys)
    assert code == 0
    assert json.loads(out) == [{"path": str(white), "predicted": "Tiger", "probabilities": {
        "Lynx": 0.05, "Ocelot": 0.1, "Puma": 0.15, "Tabby": 0.2, "Tiger": 0.5}}]


@pytest.mark.parametrize("top", ["0", "6", "-1"])
def test_top_outside_one_to_the_number_of_classes_is_one_line_and_exit_2(five, tmp_path, capsys, top):
    code, out, err = predict(five, "--top", top, flat(tmp_path / "white.png", 255, "PNG"), capsys=capsys)
    assert (code, out) == (2, "")
    assert err == f"error: --top {top}: how many classes each sentence names, 1 to 5 (the model's classes)\n"


def test_top_with_two_classes_sorts_them_and_without_it_the_sentence_is_the_tutorials(binary, tmp_path, capsys):
    black = flat(tmp_path / "black.png", 0, "PNG")  # 75% cat: label order and most likely first agree
    white = flat(tmp_path / "white.png", 255, "PNG")
    assert predict(binary, white, capsys=capsys)[1] == f"{white}: This image is 25.00% cat and 75.00% dog.\n"
    assert predict(binary, "--top", "2", white, black, capsys=capsys)[1].splitlines() == [
        f"{white}: This image is 75.00% dog and 25.00% cat.", f"{black}: This image is 75.00% cat and 25.00% dog."]
    assert predict(binary, "--top", "1", white, capsys=capsys)[1] == f"{white}: This image is 75.00% dog.\n"


def test_class_names_that_do_not_match_the_outputs_are_refused(binary, tmp_path, capsys):
    (tmp_path / "model.keras").write_bytes((binary / "model.keras").read_bytes())
    (tmp_path / "classes.json").write_text('["Bird", "Cat", "Dog"]')  # one logit is two classes, not three
    code, _, err = predict(tmp_path, flat(tmp_path / "white.png", 255, "PNG"), capsys=capsys)
    assert code == 2
    assert err == (f"error: {tmp_path / 'classes.json'}: ['Bird', 'Cat', 'Dog'] does not match the 2 classes of "
                   f"{tmp_path / 'model.keras'}\n")


def test_a_photo_stored_rotated_is_predicted_upright(tmp_path, capsys):
    """A model that looks at the top half only: white there -> log(3), black -> -log(3). The photo is stored
    with its left half white and EXIF orientation 6 (turn a quarter clockwise): upright, its top half is white."""
    import keras

    inputs = keras.Input((8, 8, 3), dtype="uint8")
    top = keras.layers.Cropping2D(((0, 4), (0, 0)))(keras.layers.Rescaling(1 / 255)(inputs))
    dense = keras.layers.Dense(1)
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(top)))
    dense.set_weights([np.full((3, 1), 2 * LOG3 / 3), np.array([-LOG3])])
    model.save(tmp_path / "model.keras")
    (tmp_path / "classes.json").write_text('["Cat", "Dog"]')
    stored = np.zeros((8, 8, 3), dtype=np.uint8)  # the model's size: nothing resized, nothing blended
    stored[:, :4] = 255
    tags = Image.Exif()
    tags[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "phone.png", exif=tags.tobytes())
    code, out, err = predict(tmp_path, tmp_path / "phone.png", capsys=capsys)
    assert (code, err) == (0, "")
    assert out == f"{tmp_path / 'phone.png'}: This image is 25.00% cat and 75.00% dog.\n"
