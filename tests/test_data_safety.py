"""Nothing lost, nothing half-written: full disks (a monkeypatched write, and a real 64 kB tmpfs),
hostile or odd inputs. Every failure is one line on stderr with exit code 2 (plot: 1), never a
traceback, and a command's files appear whole or not at all."""

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from dynbench.cli import main
from dynbench.errors import DynbenchError
from dynbench.results import RECORDS_FILE, iter_records
from dynbench.safe_io import DiskFull, append_line, write_together

RUN = ["run", "--mode", "prefill", "--method", "llava", "--prompt-len", "8", "--repeats", "1", "--warmup", "0",
       "--no-flops"]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("res") / "run"
    assert main([*RUN, "--out", str(out)]) == 0
    return out


# ---- a full disk, simulated: always runs ---------------------------------------------------
def test_an_append_that_fills_the_disk_is_cut_back_and_earlier_rows_stay(tmp_path, monkeypatch):
    path = tmp_path / RECORDS_FILE
    append_line(path, b'{"i": 1}\n')
    real_write = os.write

    def half_then_enospc(fd, data):
        real_write(fd, data[: len(data) // 2])  # the disk fills part-way through the line
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("dynbench.safe_io.os.write", half_then_enospc)
    with pytest.raises(DiskFull, match=f"disk full at {tmp_path}; free space and --resume"):
        append_line(path, b'{"i": 2, "pad": "' + b"x" * 5000 + b'"}\n')
    assert path.read_bytes() == b'{"i": 1}\n'


def test_a_short_write_counts_as_a_full_disk(tmp_path, monkeypatch):
    path = tmp_path / RECORDS_FILE
    monkeypatch.setattr("dynbench.safe_io.os.write", lambda fd, data: os.pwrite(fd, data[:3], 0))
    with pytest.raises(DiskFull):
        append_line(path, b'{"i": 1}\n')
    assert path.read_bytes() == b""


def test_files_written_together_appear_together_or_not_at_all(tmp_path, monkeypatch):
    from dynbench import safe_io

    real = safe_io._write_temp
    calls = []

    def fail_second(path, content):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, content)

    monkeypatch.setattr(safe_io, "_write_temp", fail_second)
    new = tmp_path / "new" / "deeper"
    with pytest.raises(DiskFull):
        write_together({new / "a.png": b"png", new / "a.html": "html", new / "a.json": "{}"})
    assert not (tmp_path / "new").exists()  # no file, no temp file, no folder made for them
    monkeypatch.undo()
    write_together({tmp_path / "a.png": b"png", tmp_path / "a.json": "{}"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.png"]
    umask = os.umask(0)
    os.umask(umask)
    assert {p.stat().st_mode & 0o777 for p in tmp_path.iterdir()} == {0o644 & ~umask}  # not mkstemp's 0600


def test_write_together_refuses_a_folder_where_a_file_goes(tmp_path):
    (tmp_path / "b.jsonl").mkdir()
    with pytest.raises(DynbenchError, match="is a folder"):
        write_together({tmp_path / "b.jsonl": "x"})


# ---- a full disk, real: a 64 kB tmpfs (root only) ------------------------------------------
@pytest.fixture
def tiny_disk(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a 64 kB tmpfs here ({done.stderr.decode().strip() or 'not root'})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(mnt: Path, free_pages: int) -> None:
    """Fill the tmpfs, then free `free_pages` 4-kB pages."""
    pages = 0
    try:
        while True:
            (mnt / f"filler{pages}").write_bytes(b"\0" * 4096)
            pages += 1
    except OSError:
        (mnt / f"filler{pages}").unlink(missing_ok=True)
    for k in range(1, free_pages + 1):
        (mnt / f"filler{pages - k}").unlink()


@pytest.mark.parametrize("free_pages", [0, 1, 2, 3])
def test_run_on_a_full_disk_is_one_line_and_keeps_whole_rows(tiny_disk, capsys, free_pages):
    fill(tiny_disk, free_pages)
    out = tiny_disk / "r"
    assert main([*RUN, "--prompt-len", "8,16,32", "--out", str(out)]) == 2
    line = one_error_line(capsys)
    assert "disk full at" in line or "cannot write there" in line, line
    if (out / RECORDS_FILE).exists():
        for row in iter_records(out):  # no warning, no error: every line whole
            assert row["status"] == "ok"
        assert (out / RECORDS_FILE).read_bytes().endswith(b"\n") or (out / RECORDS_FILE).stat().st_size == 0


def test_merge_baseline_plot_show_on_a_full_disk(tiny_disk, results, capsys):
    fill(tiny_disk, 1)
    assert main(["merge", str(results), "--out", str(tiny_disk / "m")]) == 2
    assert "disk full at" in one_error_line(capsys)
    assert not (tiny_disk / "m" / RECORDS_FILE).exists() and not (tiny_disk / "m" / "env").exists()
    fill(tiny_disk, 0)
    assert main(["baseline", str(results), "--out", str(tiny_disk / "b" / "base.jsonl")]) == 2
    assert "disk full at" in one_error_line(capsys)
    assert not (tiny_disk / "b").exists()
    shutil.rmtree(tiny_disk / "m", ignore_errors=True)
    for f in tiny_disk.glob("filler*"):
        f.unlink()
    fill(tiny_disk, 3)  # room for a few charts, not for all of them
    assert main(["plot", str(results), "--out", str(tiny_disk / "p")]) == 2
    assert "disk full at" in one_error_line(capsys)
    assert not [p for p in (tiny_disk / "p").iterdir() if not p.name.startswith(".dynbench")]
    assert main(["show", "--gen-len", "2", "--out", str(tiny_disk / "s")]) == 2
    assert "disk full at" in one_error_line(capsys)
    assert [p.name for p in (tiny_disk / "s").iterdir() if not p.name.startswith(".dynbench")] == []


# ---- odd and hostile inputs ----------------------------------------------------------------
@pytest.mark.parametrize(("flags", "message"), [
    (["--sample-seed", str(2**63), "--dataset", "x.jsonl"], "--sample-seed: 9223372036854775808 is out of range"),
    (["--seed", "-3"], "--seed must be ≥ 0, got -3"),
    (["--debug-decode-delay-ms", "nan"], "--debug-decode-delay-ms: nan is not a finite number"),
    (["--debug-decode-delay-ms", "inf"], "--debug-decode-delay-ms: inf is not a finite number"),
    (["--prompt-len", str(2**64)], "is out of range"),
])
def test_numbers_are_range_checked_where_they_are_parsed(capsys, flags, message):
    assert main(["run", "--device", "meta", "--mode", "prefill", *flags]) == 2
    assert message in one_error_line(capsys)


@pytest.mark.parametrize("name", ["../../x", "a/b", "/abs", "..", ".hidden", "", "x" * 300])
def test_show_name_is_a_file_name_never_a_path(tmp_path, capsys, name):
    assert main(["show", "--gen-len", "2", "--out", str(tmp_path / "s"), "--name", name]) == 2
    assert "--name" in one_error_line(capsys)
    assert not any(tmp_path.rglob("*.png"))


def test_a_folder_where_a_file_goes_and_the_reverse_are_one_line(tmp_path, results, capsys):
    (tmp_path / "r" / RECORDS_FILE).mkdir(parents=True)
    assert main([*RUN, "--out", str(tmp_path / "r"), "--resume"]) == 2
    assert "is a folder" in one_error_line(capsys)
    (tmp_path / "existing").mkdir()
    assert main(["baseline", str(results), "--out", str(tmp_path / "existing")]) == 2
    assert "is a folder" in one_error_line(capsys)
    (tmp_path / "file").write_text("x")
    assert main([*RUN, "--out", str(tmp_path / "file")]) == 2
    assert "it is a file" in one_error_line(capsys)


def _dataset(folder: Path, images: dict[str, bytes]) -> Path:
    lines = []
    for name, data in images.items():
        (folder / name).write_bytes(data)
        lines.append(json.dumps({"image": name, "prompt": "what is it?"}))
    (folder / "data.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "data.jsonl"


def _png(size=(8, 8)) -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def test_a_truncated_image_is_named_with_its_record_and_skip_bad_skips_it(tmp_path):
    from dynbench.datasets import load_dataset

    good = _png((64, 64))
    data = _dataset(tmp_path, {"good.png": good, "cut.png": good[: len(good) // 2]})
    with pytest.raises(DynbenchError, match=r"data.jsonl line 2: cannot read image .*cut.png") as err:
        load_dataset(data)
    assert "--skip-bad" in str(err.value)
    kept = load_dataset(data, skip_bad=True)
    assert [s.image.name for s in kept.samples] == ["good.png"] and len(kept.skipped) == 1


def test_a_decompression_bomb_is_one_line_and_the_limit_is_a_flag(tmp_path, monkeypatch):
    from dynbench.datasets import load_dataset
    from dynbench.images import set_max_pixels

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    data = _dataset(tmp_path, {"big.png": _png((300, 300))})
    set_max_pixels(300 * 300 - 1)  # 90,000 pixels: a bomb to this limit (Pillow only warns below 2×)
    with pytest.raises(DynbenchError, match="more than 89,999 pixels .*--max-image-pixels"):
        load_dataset(data)
    set_max_pixels(300 * 300)
    assert len(load_dataset(data).samples) == 1
    with pytest.raises(DynbenchError, match="--max-image-pixels must be ≥ 1"):
        set_max_pixels(0)


def test_records_of_the_wrong_type_are_one_line_naming_file_line_and_column(tmp_path, results, capsys):
    rows = (results / RECORDS_FILE).read_text().splitlines()
    base = tmp_path / "good.jsonl"
    assert main(["baseline", str(results), "--out", str(base)]) == 0
    for column, value in [("layer_seq_lens", 5), ("vision_keep", "0.2"), ("latency_ms_samples", "abc")]:
        bad = json.loads(rows[-1])
        bad[column] = value
        folder = tmp_path / column
        folder.mkdir()
        (folder / RECORDS_FILE).write_text("\n".join([*rows[:-1], json.dumps(bad)]) + "\n")
        for command in (["report", str(folder)], ["check", str(folder), "--baseline", str(base)],
                        ["merge", str(folder), "--out", str(tmp_path / "m")],
                        ["baseline", str(folder), "--out", str(tmp_path / "b.jsonl")]):
            assert main(command) == 2, command
            line = one_error_line(capsys)
            assert f"{RECORDS_FILE}:{len(rows)}: column {column}" in line, (command, line)


def test_merge_and_baseline_refuse_files_that_are_not_dynbench_records(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / RECORDS_FILE).write_text('{"a": 1}\n')
    assert main(["merge", str(tmp_path / "x"), "--out", str(tmp_path / "m")]) == 2
    assert "not a dynbench record" in one_error_line(capsys)
    assert main(["baseline", str(tmp_path / "x"), "--out", str(tmp_path / "b.jsonl")]) == 2
    assert "not a dynbench record" in one_error_line(capsys)
    assert not (tmp_path / "m" / RECORDS_FILE).exists() and not (tmp_path / "b.jsonl").exists()


def test_plot_with_nothing_to_draw_exits_1_with_one_line(tmp_path, results, capsys):
    rows = [json.loads(line) for line in (results / RECORDS_FILE).read_text().splitlines()]
    errored = [{**r, "status": "error: RuntimeError: boom"} for r in rows if r["step"] is None]
    for r in errored:
        for k in list(r):
            if k not in ("model", "method", "mode", "prompt_len", "gen_len", "step", "status", "device", "dtype"):
                r[k] = None
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / RECORDS_FILE).write_text("".join(json.dumps(r) + "\n" for r in errored))
    assert main(["plot", str(tmp_path / "e"), "--out", str(tmp_path / "p")]) == 1
    err = capsys.readouterr().err
    assert "nothing to draw" in err and "Traceback" not in err
    assert not any((tmp_path / "p").glob("*.png"))


def test_a_dataset_key_holding_a_newline_is_still_one_line(tmp_path, capsys):
    """Found by tests/test_fuzz.py::test_datasets (`records=[{'\\n': None}]`)."""
    from dynbench.datasets import load_dataset

    (tmp_path / "data.json").write_text(json.dumps([{"\n": None}]))
    with pytest.raises(DynbenchError) as err:
        load_dataset(tmp_path / "data.json")
    assert "\n" not in str(err.value) and "it has: \\n" in str(err.value)


@pytest.mark.parametrize(("suite", "message"), [
    ({"batch": [None]}, "--batch: an empty (null) value in the list"),  # was a TypeError (fuzzing)
    ({"\n": 1}, "unknown key(s) \\n;"),  # was a two-line message (fuzzing)
    ({1: 2, "x": 3}, "unknown key(s) 1, x;"),  # numbers and text as keys: sorting them was a TypeError
    ({"defaults": {2: 1, "y": 0}, "sweeps": [{}]}, "unknown key(s) in defaults: 2, y;"),
])
def test_odd_suites_are_one_line(tmp_path, suite, message):
    import yaml

    from dynbench.spec import load_suite

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(suite))
    with pytest.raises(DynbenchError) as err:
        load_suite(path)
    assert message in str(err.value) and "\n" not in str(err.value)
