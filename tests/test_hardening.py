"""Issue 6, hardening: odd images, hostile or damaged archives, failed downloads, bad params, interruptions
and unusable models, each with real files and, where it matters, the stage as a real process.

Cases already covered elsewhere are not repeated here; README.md ("What happens when…") lists where each
case is tested.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from catsdogs import history
from catsdogs.data import archive, images, synthetic
from catsdogs.commands.demo import merge
from catsdogs.errors import UserError
from conftest import ENV, ROOT, TINY_TRAINING, committed_params, stage_command
from test_fetch import DATA, DATA_SHA, server  # noqa: F401 - the misbehaving loopback server fixture
from test_filter import make_zip, run_filter, workdir  # noqa: F401 - the filter stage in a temporary folder

# Stages run from a temporary folder: they find the package through an absolute path.
STAGE_ENV = dict(ENV, PYTHONPATH=str(ROOT / "src"), PYTHONUNBUFFERED="1")

def write_params(folder: Path, overrides: dict) -> None:
    params = merge(committed_params(), overrides)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


# ---------------------------------------------------------------------------------------------------------
# Images: one file of each odd kind, what the check says, and that whatever is kept decodes to RGB uint8


def photo(seed: int = 0, size=(56, 40)) -> Image.Image:
    """A smooth gradient with some noise: like a photo, it compresses, and every channel varies."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    noise = np.random.default_rng(seed).normal(0, 12, base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG written by hand, for what Pillow cannot write: 16-bit RGB, absurd declared dimensions."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(rows))
            + png_chunk(b"IEND", b""))


def png16_rgb() -> bytes:
    wide = np.asarray(photo(3), dtype=np.uint16) * 257  # 8-bit values spread over 16 bits
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in wide)
    return png(wide.shape[1], wide.shape[0], 16, 2, rows)


def png16_gray() -> bytes:
    gray = np.asarray(photo(4).convert("L"), dtype=np.uint16) * 257
    return encode(Image.fromarray(gray), "PNG")


def scan_start(jpeg: bytes) -> int:
    """Where the entropy-coded data begins: just after the start-of-scan segment."""
    sos = jpeg.index(b"\xff\xda")
    return sos + 2 + struct.unpack(">H", jpeg[sos + 2 : sos + 4])[0]


def corrupt_entropy() -> bytes:
    """A complete JPEG with 40 bytes of its compressed pixels scrambled (no marker bytes introduced)."""
    jpeg = bytearray(encode(photo(5), "JPEG", quality=90))
    start = scan_start(bytes(jpeg)) + 100
    for i in range(start, start + 40):
        jpeg[i] = (jpeg[i] * 7 + 13) & 0x7F
    return bytes(jpeg)


def with_corrupt_exif() -> bytes:
    """A JFIF JPEG followed by an APP1 Exif block whose TIFF header points far outside the file."""
    jpeg = encode(photo(6), "JPEG")
    exif = b"Exif\x00\x00" + b"MM\x00*" + struct.pack(">I", 0xFFFFFF00) + bytes(range(40))
    app0_end = 4 + struct.unpack(">H", jpeg[4:6])[0]
    return jpeg[:app0_end] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + jpeg[app0_end:]


def animated_gif() -> bytes:
    frames = [photo(seed).convert("P") for seed in range(3)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def synthetic_kind(kind: str) -> bytes:
    """The embedded dataset's own odd file of this kind (catsdogs.data.synthetic.PATHOLOGIES)."""
    return synthetic._class_file(np.random.default_rng([6, 0]), 0, 32, 48, kind)


JPEG = encode(photo(1), "JPEG")

# name inside PetImages/<class>/ -> (bytes, the reason the decode check must give; None = kept)
IMAGE_CASES = {
    "zero_byte.jpg": (b"", "empty"),
    "truncated_in_data.jpg": (JPEG[: scan_start(JPEG) + (len(JPEG) - scan_start(JPEG)) // 2], "truncated"),
    "truncated_in_header.jpg": (JPEG[:100], "truncated"),  # Pillow cannot even identify it
    "truncated_png.jpg": (encode(photo(2), "PNG")[:300], "truncated"),
    "truncated_webp.jpg": (encode(photo(2), "WEBP")[:200], "truncated"),
    "corrupt_jfif.jpg": (synthetic_kind("corrupt_jfif"), "corrupt"),  # complete, undefined quantisation table
    "corrupt_entropy.jpg": (corrupt_entropy(), None),  # libjpeg only warns: pixels decode, so it is kept
    "exif_first.jpg": (synthetic_kind("exif_jpeg"), None),
    "corrupt_exif.jpg": (with_corrupt_exif(), None),
    "png_content.jpg": (encode(photo(7), "PNG"), None),
    "gif_content.jpg": (encode(photo(8).convert("P"), "GIF"), None),
    "animated_gif.jpg": (animated_gif(), None),
    "bmp_content.jpg": (encode(photo(9), "BMP"), None),
    "webp_content.jpg": (encode(photo(10), "WEBP"), None),
    "cmyk.jpg": (encode(photo(11).convert("CMYK"), "JPEG"), None),
    "grayscale.jpg": (encode(photo(12).convert("L"), "JPEG"), None),
    "png16_gray.png": (png16_gray(), None),
    "png16_rgb.png": (png16_rgb(), None),
    "rgba.png": (encode(photo(13).convert("RGBA"), "PNG"), None),
    "text.jpg": (b"just some notes, saved with the wrong extension\n", "not_an_image"),
    "bomb.png": (png(100_000, 100_000, 8, 2, b"\x00" * 16), "too_large"),  # 10^10 pixels declared, 100 bytes
}


@pytest.mark.parametrize("name", list(IMAGE_CASES))
def test_each_odd_image_gets_its_reason(name):
    data, reason = IMAGE_CASES[name]
    assert images.check(data, "decode", 89_478_485) == reason
    if reason is None:
        array = images.decode(data, (24, 32))
        assert array.shape == (24, 32, 3) and array.dtype == np.uint8


def test_16_bit_png_keeps_its_brightness():
    """Pillow converts 16-bit grayscale to RGB by clipping at 255 (all white); decode scales it down."""
    for data, original in ((png16_gray(), photo(4).convert("L").convert("RGB")), (png16_rgb(), photo(3))):
        decoded = images.decode(data, (40, 56)).astype(int)
        assert np.abs(decoded - np.asarray(original, dtype=int)).max() <= 1


def test_a_bomb_header_is_refused_without_allocating_its_pixels(tmp_path: Path):
    """81 million declared pixels (243 MB as RGB), under Pillow's own limit, above filter.max_pixels: the
    check must answer from the header. Measured in a fresh process, whose peak memory says what it did."""
    bomb = tmp_path / "bomb.jpg"
    bomb.write_bytes(png(9000, 9000, 8, 2, bytes(3 * 9000 + 1) * 100))
    code = (
        "import resource, sys; from pathlib import Path; from catsdogs.data import images; "
        "data = Path(sys.argv[1]).read_bytes(); "
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
        "print(images.check(data, 'decode', 1_000_000), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)"
    )
    result = subprocess.run([sys.executable, "-c", code, str(bomb)], env=STAGE_ENV, text=True,
                            capture_output=True, timeout=60)
    reason, grown_kib = result.stdout.split()
    assert reason == "too_large"
    assert int(grown_kib) < 50_000  # kilobytes: far below the 243 MB the pixels would take


ODD_NAMES = {
    "Cat": ["my cat 1.jpg", "Case.jpg", "case.jpg"],
    "Dog": ["chien été ü 2.jpg", "狗 3.jpg", "  leading spaces.jpg"],
}


def test_filter_stage_on_every_odd_image(workdir: Path):
    """All odd kinds in one archive through the filter stage: a reason per file, and every kept file loads
    the way training loads it (the indexer and decoder of the train stage), as a 3-channel uint8 image."""
    members = {f"PetImages/Cat/{name}": data for name, (data, _) in IMAGE_CASES.items()}
    members |= {f"PetImages/{cls}/{name}": encode(photo(20 + i), "JPEG")
                for cls, names in ODD_NAMES.items() for i, name in enumerate(names)}
    members["PetImages/Dog/Thumbs.db"] = synthetic._thumbs_db(1)
    members["PetImages/Dog/zip_bomb.jpg"] = bytes(3 * 2**20)  # 3 MiB of zeros, deflated to a few KB
    zip_path = workdir / "odd.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    (workdir / "params.yaml").write_text((workdir / "params.yaml").read_text().replace(
        "max_pixels: null", "max_pixels: 500000"))  # any member over 4 bytes/pixel + 1 MiB is never read

    summary, report = run_filter(workdir, zip_path)

    expected = {f"PetImages/Cat/{name}": reason for name, (_, reason) in IMAGE_CASES.items() if reason}
    expected["PetImages/Dog/zip_bomb.jpg"] = "too_large"
    assert {row["member"]: row["reason"] for row in report if row["reason"] != "ignored"} == expected
    assert {row["member"]: row["detail"] for row in report if row["reason"] == "ignored"} == {
        "PetImages/Dog/Thumbs.db": "not an image file name"}
    clean = workdir / "data/clean"
    kept = {f"PetImages/{p.relative_to(clean).as_posix()}" for p in clean.rglob("*") if p.is_file()}
    assert kept == {name for name in members if name.endswith((".jpg", ".png"))} - set(expected)
    assert summary["kept"] == len(kept) and summary["dropped"] == len(expected)
    # Case-sensitive file system (Linux): both names differing only in case are kept, each with its bytes.
    assert (clean / "Cat/Case.jpg").read_bytes() == members["PetImages/Cat/Case.jpg"]
    assert (clean / "Cat/case.jpg").read_bytes() == members["PetImages/Cat/case.jpg"]

    paths, _, names = images.index(clean, seed=None, shuffle=False)
    assert names == ["Cat", "Dog"] and len(paths) == len(kept)
    for path in paths:
        array = images.decode_file(clean / path, (24, 32))
        assert array.shape == (24, 32, 3) and array.dtype == np.uint8, path


def test_names_clashing_on_a_case_insensitive_file_system_are_listed_not_overwritten():
    """macOS and Windows store "Case.jpg" and "case.jpg" as one file: the first is kept, the second is
    ignored with the reason, so the counts match the files; class folders that would merge are an error."""
    from catsdogs.data.archive import Members

    folding = str.casefold
    members = Members(images=[("PetImages/Cat/Case.jpg", "Cat"), ("PetImages/Cat/case.jpg", "Cat"),
                              ("PetImages/Dog/case.jpg", "Dog")])
    separated = archive.separate_clashes(members, folding)
    assert separated.images == [("PetImages/Cat/Case.jpg", "Cat"), ("PetImages/Dog/case.jpg", "Dog")]
    [(name, why)] = separated.ignored
    assert name == "PetImages/Cat/case.jpg" and "same file name as PetImages/Cat/Case.jpg" in why
    with pytest.raises(UserError, match="class folders Cat and cat differ only in case"):
        archive.separate_clashes(Members(images=[("PetImages/Cat/1.jpg", "Cat"),
                                                      ("PetImages/cat/1.jpg", "cat")]), folding)


def test_name_key_sees_this_file_system(tmp_path: Path):
    key = archive.name_key(tmp_path)
    assert list(tmp_path.iterdir()) == []  # the probe is gone
    (tmp_path / "X").touch()
    case_insensitive = (tmp_path / "x").exists()
    assert (key("Case.jpg") == key("case.jpg")) == case_insensitive


# ---------------------------------------------------------------------------------------------------------
# Archives: names that try to escape, duplicate entries, damaged member data


def test_more_escaping_names_and_duplicates_are_ignored(workdir: Path):
    good = encode(photo(30), "JPEG")
    zip_path = workdir / "a.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for name in ["PetImages/Cat/1.jpg", "PetImages/Dog/1.jpg", "..\\evil.jpg", "C:/evil.jpg",
                     "PetImages/Cat/..\\..\\evil.jpg", "\\\\server\\share\\evil.jpg", "PetImages/../evil.jpg"]:
            zf.writestr(name, good)
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("PetImages/Cat/2.jpg", b"first entry, not an image")
            zf.writestr("PetImages/Cat/2.jpg", good)  # what reading the name gives, and what is kept
    summary, report = run_filter(workdir, zip_path)
    ignored = [(row["member"], row["detail"]) for row in report if row["reason"] == "ignored"]
    assert sorted(ignored) == sorted([
        ("..\\evil.jpg", "path escapes the archive ('..')"), ("C:/evil.jpg", "absolute path"),
        ("PetImages/Cat/..\\..\\evil.jpg", "path escapes the archive ('..')"),
        ("\\\\server\\share\\evil.jpg", "absolute path"), ("PetImages/../evil.jpg", "path escapes the archive ('..')"),
        ("PetImages/Cat/2.jpg", "duplicate member name (a later entry of the same name is used)"),
    ])
    assert files_under(workdir / "data") == {"clean", "clean/Cat", "clean/Dog", "clean/Cat/1.jpg",
                                             "clean/Cat/2.jpg", "clean/Dog/1.jpg"}
    assert not list(workdir.parent.rglob("*evil*"))
    assert summary["kept"] == 3 and summary["dropped"] == 0


def damage(zip_path: Path, member: str, how: str) -> None:
    """Spoil one member's data in place, leaving the central directory intact."""
    raw = bytearray(zip_path.read_bytes())
    with zipfile.ZipFile(zip_path) as zf:
        info = zf.getinfo(member)
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    if how == "crc":  # a stored member with one byte flipped: the data reads, the CRC-32 does not match
        raw[start + info.compress_size // 2] ^= 0xFF
    elif how == "deflate":  # a deflated member whose stream begins with an invalid block type
        raw[start : start + 8] = b"\xff" * 8
    else:  # flagged as encrypted, in its local header and in the central directory
        central = raw.index(b"PK\x01\x02")
        while raw[central + 46 : central + 46 + len(member)] != member.encode():
            central = raw.index(b"PK\x01\x02", central + 4)
        raw[info.header_offset + 6] |= 0x1
        raw[central + 8] |= 0x1
    zip_path.write_bytes(bytes(raw))


@pytest.mark.parametrize("how, message", [
    ("crc", "member PetImages/Dog/3.jpg is damaged (BadZipFile: Bad CRC-32"),
    ("deflate", "member PetImages/Dog/3.jpg is damaged (error: Error -3 while decompressing data"),
    ("encrypted", "member PetImages/Dog/3.jpg cannot be read (File 'PetImages/Dog/3.jpg' is encrypted"),
])
def test_damaged_member_is_one_clear_error_and_writes_nothing(tmp_path: Path, how, message):
    zip_path = tmp_path / "data/raw/archive"
    zip_path.parent.mkdir(parents=True)
    with zipfile.ZipFile(zip_path, "w") as zf:
        for cls in ("Cat", "Dog"):
            for i in range(6):
                info = zipfile.ZipInfo(f"PetImages/{cls}/{i}.jpg")
                info.compress_type = zipfile.ZIP_DEFLATED if how == "deflate" else zipfile.ZIP_STORED
                zf.writestr(info, encode(photo(40 + i), "JPEG"))
    damage(zip_path, "PetImages/Dog/3.jpg", how)
    write_params(tmp_path, {"filter": {"workers": 2}})
    result = subprocess.run(stage_command("filter"), cwd=tmp_path, env=STAGE_ENV, text=True, capture_output=True,
                            timeout=60)
    assert result.returncode == 2, result.stderr
    [line] = error_lines(result.stderr)
    assert line.startswith("error: data/raw/archive: " + message)
    assert "Traceback" not in result.stderr
    assert files_under(tmp_path / "data") == {"raw", "raw/archive"}
    assert not (tmp_path / "metrics").exists()


# ---------------------------------------------------------------------------------------------------------
# Download: the real stage against a loopback server


@pytest.mark.parametrize("failure", ["404", "sha256"])
def test_download_stage_fails_with_one_line_and_no_archive(tmp_path: Path, server, failure):  # noqa: F811
    if failure == "404":
        server.behaviour.fail_status, server.behaviour.fail_count = 404, 10**6
    else:
        server.behaviour.body = DATA[:-1] + bytes([DATA[-1] ^ 1])  # right size, wrong bytes
    write_params(tmp_path, {"download": {"source": "url", "url": server.url, "size": len(DATA), "sha256": DATA_SHA,
                                         "timeout": 5, "retries": 1}})
    result = subprocess.run(stage_command("download"), cwd=tmp_path, env=STAGE_ENV, text=True, capture_output=True,
                            timeout=60)
    assert result.returncode == 2, result.stderr
    [line] = error_lines(result.stderr)
    if failure == "404":
        assert line == f"error: {server.url}: HTTP 404 Not Found"
        assert len(server.ranges) == 1  # a 404 is not retried
    else:
        assert line.startswith(f"error: {server.url}: SHA-256 mismatch: expected {DATA_SHA}, got ")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data/raw").exists() or list((tmp_path / "data/raw").iterdir()) == []
    assert list((tmp_path / ".cache/download").iterdir()) == []  # no partial file kept to resume from


def test_download_stage_refuses_a_url_without_a_host_at_once(tmp_path: Path):
    """Issue 17: it was retried as a network failure for about 31 s before the error."""
    write_params(tmp_path, {"download": {"source": "url", "url": "http:///kagglecatsanddogs_5340.zip", "retries": 5}})
    start = time.monotonic()
    result = subprocess.run(stage_command("download"), cwd=tmp_path, env=STAGE_ENV, text=True, capture_output=True,
                            timeout=60)
    assert result.returncode == 2, result.stderr
    assert error_lines(result.stderr) == ["error: http:///kagglecatsanddogs_5340.zip: no host name in the URL; use "
                                          "http://, https://, file:// or a local path"]
    assert time.monotonic() - start < 20 and not (tmp_path / "data").exists()


# ---------------------------------------------------------------------------------------------------------
# Params: each stage, as dvc runs it, stops on a bad params.yaml before doing anything


@pytest.mark.parametrize("stage, overrides, line", [
    ("download", {"download": {"timeout": 0}},
     "error: params.yaml: download.timeout = 0: input should be greater than 0"),
    ("filter", {"filter": {"workers": -1}},
     "error: params.yaml: filter.workers = -1: input should be greater than or equal to 0"),
    ("train", {"epochs": "5"}, "error: params.yaml: epochs = '5': input should be a valid integer"),
    ("train", {"train": {"lr": 0.1}}, "error: params.yaml: unknown key 'train.lr' (value 0.1); allowed here: "),
    ("evaluate", {"data": {"validation_split": 1.0}},
     "error: params.yaml: data.validation_split = 1.0: input should be less than 1"),
    ("plot", {"train": {"augment": {"rotation": 0.9}}},
     "error: params.yaml: train.augment.rotation = 0.9: input should be less than or equal to 0.5"),
])
def test_stage_with_bad_params_exits_2_with_one_line_and_no_output(tmp_path: Path, stage, overrides, line):
    write_params(tmp_path, overrides)
    before = files_under(tmp_path)
    result = subprocess.run(stage_command(stage), cwd=tmp_path, env=STAGE_ENV, text=True, capture_output=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(line) and "\n" not in result.stderr.strip()
    assert result.stdout == ""
    assert files_under(tmp_path) == before


def test_stage_with_malformed_params_yaml(tmp_path: Path):
    (tmp_path / "params.yaml").write_text("epochs: 3\nfilter: {method: decode\n")
    result = subprocess.run(stage_command("filter"), cwd=tmp_path, env=STAGE_ENV, text=True, capture_output=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: params.yaml: malformed YAML at line 3, column 1")
    assert files_under(tmp_path) == {"params.yaml"}


# ---------------------------------------------------------------------------------------------------------
# Interruptions: Ctrl-C and SIGKILL in the middle of a stage


def start_stage(stage: str, cwd: Path) -> subprocess.Popen:
    """The stage in its own process group, so a signal reaches it and its workers as Ctrl-C would. SIGINT is
    restored to its default first: a shell starting the tests in the background (`pytest &`) ignores it, and
    Python keeps an ignored SIGINT ignored, so Ctrl-C could not be tested."""
    return subprocess.Popen(stage_command(stage), cwd=cwd, env=STAGE_ENV, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(process: subprocess.Popen, found, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not found():
        if process.poll() is not None:
            raise AssertionError(f"stage ended (exit {process.returncode}) before the moment to interrupt it:\n"
                                 + process.stderr.read()[-3000:])
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError("the moment to interrupt never came")
        time.sleep(0.01)


def test_ctrl_c_during_training_exits_130_and_writes_no_output(tmp_path: Path):
    rng = np.random.default_rng(0)
    for cls in ("Cat", "Dog"):
        folder = tmp_path / "data/clean" / cls
        folder.mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    write_params(tmp_path, merge(copy.deepcopy(TINY_TRAINING), {
        "epochs": 1000, "data": {"image_size": [16, 16], "batch_size": 8, "cache_mode": "memory"},
        "train": {"backend": "tensorflow"}}))
    process = start_stage("train", tmp_path)
    wait_for(process, lambda: any(tmp_path.glob(".cache/train/*/checkpoints/save_at_1.keras"))
             and (tmp_path / "metrics/train/metrics.json").exists(), timeout=120)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 130, stderr[-3000:]
    assert stderr.rstrip().endswith("interrupted: nothing half-written was left behind")
    assert "Traceback" not in stderr
    for output in ("models/model.keras", "models/classes.json", "models/checkpoints"):
        assert not (tmp_path / output).exists(), output
    assert not (tmp_path / "models").exists()  # no temporary files either
    # the live log keeps the epochs that finished: the curve of the interrupted run, in whole files
    assert [p.name for p in (tmp_path / "metrics").iterdir()] == ["train"]
    finished = history.read_history(tmp_path / "metrics/train")
    assert finished and [row["epoch"] for row in finished] == list(range(1, len(finished) + 1))
    assert history.read_summary(tmp_path / "metrics/train")["step"] == len(finished)
    assert not [p for p in (tmp_path / "metrics").rglob("*") if ".tmp" in p.name]
    # The run in progress is kept to resume from, and its checkpoints are whole files.
    [work] = (tmp_path / ".cache/train").iterdir()
    checkpoints = sorted((work / "checkpoints").iterdir())
    assert checkpoints and all(p.name.startswith("save_at_") and p.suffix == ".keras" for p in checkpoints)
    for checkpoint in checkpoints:
        with zipfile.ZipFile(checkpoint) as zf:
            assert zf.testzip() is None


@pytest.fixture
def big_archive(tmp_path: Path) -> Path:
    """Two chunks of work for two worker processes: 64 large photos (seconds of decoding) and 4 small ones.
    Once the small ones are written, one worker is busy and the other idle: the moment to interrupt."""
    archive = tmp_path / "data/raw/archive"
    archive.parent.mkdir(parents=True)
    large = [encode(photo(seed, size=(2000, 1500)), "JPEG", quality=50) for seed in range(2)]
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(64):
            zf.writestr(f"PetImages/Cat/{i}.jpg", large[i % 2])
        for i in range(4):
            zf.writestr(f"PetImages/Dog/{i}.jpg", encode(photo(i), "JPEG"))
    write_params(tmp_path, {"filter": {"workers": 2}})
    return tmp_path


def writing_started(folder: Path):
    def small_chunk_done() -> bool:
        if len(list(folder.glob("data/.clean.*.tmp/Dog/*.jpg"))) < 4:
            return False
        time.sleep(0.2)  # the worker hands its results back and waits for more
        return True

    return small_chunk_done


def test_ctrl_c_during_filter_exits_130_and_leaves_nothing(big_archive: Path):
    process = start_stage("filter", big_archive)
    wait_for(process, writing_started(big_archive), timeout=60)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr[-3000:]
    assert "interrupted: nothing half-written was left behind" in stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr  # nor one per worker process
    assert files_under(big_archive / "data") == {"raw", "raw/archive"}
    assert not (big_archive / "metrics").exists()


def test_sigkill_during_filter_leaves_no_output_and_the_next_run_cleans_up(big_archive: Path):
    process = start_stage("filter", big_archive)
    wait_for(process, writing_started(big_archive), timeout=60)
    os.killpg(process.pid, signal.SIGKILL)  # the stage and its workers, with no chance to clean up
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    data = big_archive / "data"
    assert not (data / "clean").exists() and not (big_archive / "metrics").exists()
    # Only a hidden temporary folder is left; no output path exists, half-written or otherwise.
    [leftover] = [p for p in data.iterdir() if p.name != "raw"]
    assert leftover.name.startswith(".clean.") and leftover.name.endswith(".tmp")

    # The next run removes it (a smaller archive, to be quick).
    small = {f"PetImages/{cls}/{i}.jpg": encode(photo(i), "JPEG") for cls in ("Cat", "Dog") for i in range(3)}
    make_zip(data / "raw/archive", small)
    result = subprocess.run(stage_command("filter"), cwd=big_archive, env=STAGE_ENV, text=True,
                            capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"removing data/{leftover.name}, left by an interrupted run" in result.stderr
    assert sorted(p.name for p in data.iterdir()) == ["clean", "raw"]
    assert json.loads((big_archive / "metrics/filter.json").read_text())["kept"] == 6
    assert list(csv.reader(open(big_archive / "metrics/filter_dropped.csv"))) == [["member", "reason", "detail"]]


# ---------------------------------------------------------------------------------------------------------
# Models: a corrupt, foreign or unsafe models/model.keras


def lambda_model(path: Path) -> None:
    """A model whose Lambda layer holds Python bytecode: loading it would run code from the file."""
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2)])
    model.save(path)


@pytest.mark.parametrize("kind, detail", [
    ("garbage", "not a loadable Keras model"),
    ("foreign zip", "not a loadable Keras model"),
    ("unsafe lambda", "Lambda"),
])
def test_evaluate_refuses_an_unusable_model_with_one_line(tmp_path: Path, monkeypatch, capsys, kind, detail):
    from catsdogs.stages import evaluate

    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, {"train": {"backend": "tensorflow"}})
    model = Path("models/model.keras")
    model.parent.mkdir()
    if kind == "garbage":
        model.write_bytes(os.urandom(2000))
    elif kind == "foreign zip":
        make_zip(model, {"readme.txt": b"a zip, but not a Keras archive"})
    else:
        lambda_model(model)
    (model.parent / "classes.json").write_text('["Cat", "Dog"]')
    with pytest.raises(SystemExit) as info:
        evaluate.main(stage_command("evaluate")[3:])
    assert info.value.code == 2
    [line] = error_lines(capsys.readouterr().err)
    assert line.startswith("error: models/model.keras: not a loadable Keras model (")
    assert detail in line
    assert not Path("metrics").exists()


def test_predict_refuses_an_unsafe_model(tmp_path: Path, capsys):
    from catsdogs.commands import cli

    lambda_model(tmp_path / "model.keras")
    (tmp_path / "classes.json").write_text('["Cat", "Dog"]')
    photo(1).save(tmp_path / "a.jpg")
    with pytest.raises(SystemExit) as info:
        cli.main(["predict", "--model", str(tmp_path / "model.keras"), "--classes", str(tmp_path / "classes.json"),
                  str(tmp_path / "a.jpg")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "not a loadable Keras model" in err and "Lambda" in err and "Traceback" not in err
