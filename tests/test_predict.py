"""``python -m pipeline.serve.predict``: output, model choice, and every bad-file case.

A bad file must cost one stderr line naming it while the other files are
still predicted, and the exit status must say that something failed.
"""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import FIXTURE_DIR, ROOT, sh
from pipeline import config
from pipeline.serve import export
from pipeline.data import idx
from pipeline.serve import images, predict
from pipeline.rnn import model as model_lib

TEST_IMAGES = FIXTURE_DIR / "t10k-images-idx3-ubyte.gz"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(3)
    path = tmp_path_factory.mktemp("model") / "gru.keras"
    cfg = config.ModelConfig(cell="gru", units=8, layers=1)
    model_lib.build(cfg, (28, 28), 10, "gru").save(path)
    return path


@pytest.fixture
def good(tmp_path):
    """A photo-like PNG of the fixture's first test digit (a 7)."""
    digit = idx.read(TEST_IMAGES).data[0]
    Image.fromarray(255 - digit).resize((90, 90)).save(tmp_path / "seven.png")
    return tmp_path / "seven.png"


def _run(capsys, *args):
    rc = predict.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def _expected(ckpt, x):
    import keras

    logits = keras.models.load_model(ckpt).predict(x.astype("float32"), verbose=0)
    return logits.argmax(axis=1)


def test_idx_file_and_picture_as_json_lines(ckpt, good, capsys):
    rc, out, err = _run(capsys, TEST_IMAGES, good, "--model", ckpt, "--json")
    assert rc == 0 and err == ""
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 201
    assert records[0]["file"] == f"{TEST_IMAGES}[0]" and records[-1]["file"] == str(good)
    first = records[0]
    assert set(first) == {"file", "prediction", "probability", "runner_up", "runner_up_probability"}
    assert first["probability"] >= first["runner_up_probability"]
    assert first["prediction"] != first["runner_up"]
    np.testing.assert_array_equal([r["prediction"] for r in records[:200]],
                                  _expected(ckpt, idx.read(TEST_IMAGES).data))


def test_table_output_and_folders_are_searched(ckpt, good, capsys):
    (good.parent / "notes.txt").write_text("not a picture")  # skipped inside a folder
    rc, out, err = _run(capsys, good.parent, "--model", ckpt)
    assert rc == 0 and err == ""
    header, row = out.splitlines()
    assert header.split() == ["file", "digit", "prob", "runner-up", "prob"]
    assert row.split()[0] == str(good) and len(row.split()) == 5


BAD_FILES = {
    "not an image": ("notes.png", b"hello, I am text", "not an image"),
    "empty file": ("empty.png", b"", "empty file"),
    "truncated PNG": ("cut.png", None, "unreadable image"),
    "missing file": ("missing.jpg", ..., "no such file"),
    "IDX labels, not images": ("labels-ubyte", None, "holds no images"),
    "corrupted gzip IDX": ("broken-ubyte.gz", b"\x1f\x8b\x08\x00garbage", "corrupted gzip"),
    "blank picture": ("blank.png", None, "no digit found"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_is_one_line_and_the_others_are_still_predicted(case, ckpt, good, capsys):
    name, content, reason = BAD_FILES[case]
    bad = good.parent / name
    if case == "truncated PNG":
        bad.write_bytes(good.read_bytes()[:60])
    elif case == "IDX labels, not images":
        idx.write(bad, np.arange(10, dtype=np.uint8))
    elif case == "blank picture":
        Image.new("RGB", (40, 40), (250, 250, 240)).save(bad)
    elif content is not ...:
        bad.write_bytes(content)
    rc, out, err = _run(capsys, bad, good, "--model", ckpt, "--json")
    assert rc == 1
    assert err.splitlines() == [err.strip()] and err.startswith(f"predict: error: {bad}: ")
    assert reason in err
    assert [json.loads(line)["file"] for line in out.splitlines()] == [str(good)]


def test_a_folder_without_pictures_is_an_error(ckpt, good, tmp_path, capsys):
    (tmp_path / "empty-folder").mkdir()
    rc, out, err = _run(capsys, tmp_path / "empty-folder", good, "--model", ckpt)
    assert rc == 1 and "empty-folder: folder holds no" in err and str(good) in out


def test_a_model_that_does_not_exist_is_one_line_naming_it(good, capsys):
    rc, out, err = _run(capsys, good, "--model", "no-such-model")
    assert rc == 2 and out == ""
    assert err.strip() == ("predict: error: no-such-model: no such model (not a file or folder, "
                           "and no models/checkpoints/no-such-model.keras)")


def test_a_model_file_that_is_not_a_model(good, tmp_path, capsys):
    (tmp_path / "fake.keras").write_text("nope")
    rc, _, err = _run(capsys, good, "--model", tmp_path / "fake.keras")
    assert rc == 2 and f"{tmp_path / 'fake.keras'}: not a loadable Keras model" in err
    assert len(err.strip().splitlines()) == 1


def test_champion_by_default_then_by_name_then_the_export(ckpt, good, tmp_path, monkeypatch,
                                                          capsys):
    monkeypatch.chdir(tmp_path)
    rc, _, err = _run(capsys, good)
    assert rc == 2 and "no champion" in err
    (tmp_path / "models" / "champion").mkdir(parents=True)
    shutil.copy(ckpt, tmp_path / "models" / "champion" / "model.keras")
    assert predict.resolve(None)[0] == "models/champion/model.keras"
    (tmp_path / "models" / "best").mkdir()
    shutil.copy(ckpt, tmp_path / "models" / "best" / "model.keras")
    assert predict.resolve(None)[0] == "models/best/model.keras"  # the workspace's own first
    (tmp_path / "models" / "checkpoints").mkdir()
    shutil.copy(ckpt, tmp_path / "models" / "checkpoints" / "gru.keras")
    assert predict.resolve("gru")[0] == "models/checkpoints/gru.keras"
    export.from_checkpoint(ckpt, tmp_path / "models" / "export")
    loaded, probabilities = predict.resolve("models/export/champion")
    assert loaded == "models/export/champion/1"
    x = idx.read(TEST_IMAGES).data
    np.testing.assert_array_equal(probabilities(x).argmax(axis=1), _expected(ckpt, x))


def test_command_line_exit_status(ckpt, good, tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    proc = sh("python", "-m", "pipeline.serve.predict", str(good), str(tmp_path / "empty.jpg"),
              "--model", str(ckpt), cwd=ROOT, check=False)
    assert proc.returncode == 1
    # TensorFlow's C++ start-up lines (absl, oneDNN, CUDA) cannot be turned off.
    assert [l for l in proc.stderr.splitlines() if l.startswith("predict")] == [
        f"predict: error: {tmp_path / 'empty.jpg'}: empty file"]
    assert str(good) in proc.stdout


def test_basic_and_deskew_options_change_what_the_model_reads(tmp_path, monkeypatch, capsys):
    """A thick, slanted 1: --basic skips the pen step, --deskew stands it up; each
    hands the model another 28x28 image (the model here records what it reads)."""
    from PIL import ImageDraw

    canvas = Image.new("L", (240, 240), 255)
    ImageDraw.Draw(canvas).line([(150, 30), (90, 210)], fill=0, width=40)
    canvas.save(tmp_path / "one.png")
    read = []

    def recorder(path):
        def probabilities(x):
            read.append(x[0].copy())
            return np.full((len(x), 10), 0.1)
        return probabilities

    monkeypatch.setattr(predict, "_keras", recorder)
    (tmp_path / "m.keras").write_bytes(b"")
    for flags in ([], ["--basic"], ["--deskew"]):
        assert _run(capsys, tmp_path / "one.png", "--model", tmp_path / "m.keras", *flags)[0] == 0
    default, basic, deskewed = read
    np.testing.assert_array_equal(default, images.load(tmp_path / "one.png")[0])
    np.testing.assert_array_equal(basic, images.load(tmp_path / "one.png", images.BASIC)[0])
    np.testing.assert_array_equal(deskewed, images.load(tmp_path / "one.png",
                                                        images.Steps(deskew=True))[0])
    assert not np.array_equal(default, basic) and not np.array_equal(default, deskewed)
