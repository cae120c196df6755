"""The committed picture set and the commands that make and score it."""

import csv
from collections import Counter

from PIL import Image

from conftest import FIXTURE_DIR, ROOT
from pipeline import config
from pipeline.serve import pictures
from pipeline.rnn import model as model_lib

SET = ROOT / "data" / "pictures"


def test_committed_set_is_small_labelled_and_varied():
    rows = list(csv.DictReader(open(SET / "labels.csv", newline="")))
    assert len(rows) == 50 and Counter(r["label"] for r in rows) == {str(d): 5 for d in range(10)}
    files = [SET / r["file"] for r in rows]
    assert sum(f.stat().st_size for f in files) < 400_000
    opened = [Image.open(f) for f in files]
    assert {im.format for im in opened} == {"PNG", "JPEG"}
    assert len({im.size for im in opened}) > 30  # many sizes
    assert {im.mode for im in opened} >= {"RGB", "L"}


def test_make_is_seeded_and_score_reports_both_accuracies(tmp_path, monkeypatch):
    import keras

    first = pictures.make(FIXTURE_DIR, tmp_path / "a", count=20)
    again = pictures.make(FIXTURE_DIR, tmp_path / "b", count=20)
    assert first == again and len(first) == 20
    assert (tmp_path / "a" / first[0]["file"]).read_bytes() == (
        tmp_path / "b" / first[0]["file"]).read_bytes()

    keras.utils.set_random_seed(0)
    ckpt = tmp_path / "m.keras"
    model_lib.build(config.ModelConfig(cell="gru", units=4, layers=1)).save(ckpt)
    result = pictures.score(tmp_path / "a", FIXTURE_DIR, model=str(ckpt))
    assert result["model"] == str(ckpt)
    assert result["pictures"]["images"] == 20 and result["pictures"]["failed"] == 0
    assert 0 <= result["pictures"]["accuracy"] <= 1
    assert result["mnist_test"]["images"] == 200
