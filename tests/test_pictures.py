"""The committed picture sets and the commands that make and score them."""

import csv
from collections import Counter

from PIL import Image

from conftest import FIXTURE_DIR, ROOT
from pipeline import config
from pipeline.serve import images, pictures, rendered
from pipeline.rnn import model as model_lib

SET = ROOT / "data" / "pictures"
RENDERED = ROOT / "data" / "pictures-rendered"


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
    rendered.make(tmp_path / "r", per_class=2)
    result = pictures.score([tmp_path / "a", tmp_path / "r"], FIXTURE_DIR, model=str(ckpt),
                            steps=images.Steps(deskew=True), as_pictures=True)
    assert result["model"] == str(ckpt) and result["steps"]["deskew"] is True
    mnist_set, other = result["pictures"][str(tmp_path / "a")], result["pictures"][str(tmp_path / "r")]
    assert mnist_set["images"] == 20 and mnist_set["failed"] == 0
    assert 0 <= mnist_set["accuracy"] <= 1 and set(mnist_set["per_class"]) == set("0123456789")
    assert other["images"] == 20 and set(other["kind"]) == {"font", "strokes"}
    assert result["mnist_test"]["images"] == 200
    assert result["mnist_test_as_pictures"]["images"] == 200


def test_the_rendered_set_is_not_mnist_balanced_varied_and_small():
    rows = list(csv.DictReader(open(RENDERED / "labels.csv", newline="")))
    per_class = Counter(r["label"] for r in rows)
    assert len(per_class) == 10 and set(per_class.values()) == {rendered.PER_CLASS}
    assert Counter(r["kind"] for r in rows) == {"font": 5 * rendered.PER_CLASS,
                                                 "strokes": 5 * rendered.PER_CLASS}
    assert {r["low_res"] for r in rows} == {r["light_on_dark"] for r in rows} == {"0", "1"}
    assert len({r["made_by"].split(",")[0] for r in rows if r["kind"] == "font"}) >= 20  # fonts
    files = [RENDERED / r["file"] for r in rows]
    assert sum(f.stat().st_size for f in files) < 3_000_000
    assert {Image.open(f).format for f in files} == {"PNG", "JPEG"}


def test_rendered_make_is_seeded(tmp_path):
    first = rendered.make(tmp_path / "a", per_class=3)
    again = rendered.make(tmp_path / "b", per_class=3)
    assert first == again and len(first) == 30
    assert all((tmp_path / "a" / r["file"]).read_bytes() == (tmp_path / "b" / r["file"]).read_bytes()
               for r in first)


def test_summary_counts_per_class_groups_failures_and_confusions():
    rows = [{"kind": k} for k in ("font", "font", "strokes", "strokes")]
    out = pictures.summary([1, 1, 4, 4], [1, 7, 6, None], rows)
    assert out["accuracy"] == 0.25 and out["failed"] == 1
    assert out["per_class"] == {"1": 0.5, "4": 0.0}
    assert out["kind"] == {"font": 0.5, "strokes": 0.0}
    assert out["confusions"] == {"1->7": 1, "4->6": 1}


def test_report_rewrites_only_its_block(tmp_path):
    from pipeline.serve import picture_report

    def one(acc):
        s = pictures.summary([1, 1, 4, 4], [1, 7 if acc < 1 else 1, 4, 6 if acc < 1 else 4],
                             [{"kind": "font"}, {"kind": "strokes"}] * 2)
        return {str(rendered.OUT_DIR): s, str(pictures.OUT_DIR): s}

    runs = [{"label": "lstm", "preprocessing": name, "pictures": one(acc),
             "mnist_test": {"accuracy": 0.99}} for name, acc in (("basic (before)", 0.5),
                                                                 ("default", 1.0))]
    report = tmp_path / "pictures.md"
    report.write_text(f"# Pictures\n\nprose before\n\n{picture_report.BEGIN}\nold\n"
                      f"{picture_report.END}\n\nprose after\n")
    picture_report.write(report, runs, "python -m pipeline.serve.picture_report --model lstm=x")
    text = report.read_text()
    assert "prose before" in text and "prose after" in text and "\nold\n" not in text
    assert "| lstm | basic (before) | **50.0%** | 100.0% | 0.0% |" in text  # fonts, strokes
    assert "| lstm | basic (before) | 1 | 0 | 0 | 0 | 1 | 0 | 0 | 0 | 2 |" in text  # 1->7, 4->6
    assert "python -m pipeline.serve.picture_report --model lstm=x" in text
    assert (tmp_path / "pictures.json").exists()
