"""A picture set that is not MNIST: digits from fonts and from drawn pen strokes.

Not a stage and no params. ``data/pictures`` is made from MNIST's own test
digits, so it only tests the camera side; the models' trouble with digits that
other hands, pens and scanners made (issue 25: font and drawn digits read
right only 9 times in 10, 1 read as 8 or 9, 4 as 6) needs digits that never
were MNIST. ``make`` writes ``data/pictures-rendered/``, seeded, half of each
class from fonts, half drawn (``pipeline.serve.strokes``):

* fonts: those shipped in matplotlib's ``mpl-data/fonts/ttf`` (pinned by
  constraints.txt: DejaVu Sans/Serif/Mono, STIX and Computer Modern, regular,
  bold, italic/oblique) plus any other font ``fc-list`` finds that has digits;
  a glyph is rendered 8-120 px tall, made bolder (PIL's stroke) or thinner
  (erosion), slanted (shear) and rotated a little;
* then every digit is put on a canvas as a picture: off-centre padding, ink and
  paper colours (dark on light, or light on dark for a third), sometimes made
  at low resolution and upscaled (pixelated or blurred), saved as PNG or JPEG.

``labels.csv`` gives each file's digit, kind (font or strokes) and what was
done. The committed set is the reference: regenerating it gives the same bytes
only where the same fonts are installed (``fc-list`` differs between machines).
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np

from pipeline.serve import strokes

OUT_DIR = Path("data/pictures-rendered")
SEED = 25
PER_CLASS = 80
LOW_RES = 16  # digits at most this tall are saved as upscaled low-resolution pictures
# matplotlib's fonts that have the ten digits (its Display, NonUni, Siz* and LastResort do not).
MPL_FONTS = ("DejaVuSans", "DejaVuSerif", "DejaVuSansMono", "STIXGeneral",
             "cmr10", "cmss10", "cmtt10", "cmb10", "cmti10")
INKS = [(15, 15, 15), (25, 40, 140), (60, 30, 30), (40, 40, 40)]
PAPERS = [(255, 255, 255), (245, 240, 220), (225, 230, 235), (200, 200, 200)]
BOARDS = [(20, 20, 20), (30, 60, 40), (0, 0, 0), (40, 40, 70)]       # light-on-dark backgrounds
CHALKS = [(250, 250, 250), (230, 230, 200), (255, 255, 255)]


def fonts() -> list[Path]:
    """Font files with digits: matplotlib's, then other ``fc-list`` ones, by file name."""
    import matplotlib

    mpl = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    found = sorted(p for p in mpl.glob("*.ttf") if p.stem.startswith(MPL_FONTS)
                   and "Display" not in p.stem)
    names = {p.name for p in found}
    listed = ""
    if shutil.which("fc-list"):
        listed = subprocess.run(["fc-list", ":charset=30-39", "file"], capture_output=True,
                                text=True, check=False).stdout
    system = sorted({Path(line.split(":")[0].strip()) for line in listed.splitlines()
                     if line.strip()})
    found += [p for p in system if p.suffix.lower() in (".ttf", ".otf")
              and p.name not in names and p.is_file()]
    return found


def font_digit(label: int, font: Path, rng: np.random.Generator, height: int):
    """(ink mask "L" image of ``label`` in ``font``, ~``height`` px tall; what was done)."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    face = ImageFont.truetype(str(font), size=max(6, round(height * 1.4)))
    left, top, right, bottom = face.getbbox(str(label))
    weight = float(rng.choice([0, 0, 0, 0.04, 0.08, -0.04]))  # bolder or thinner, x height
    bold = max(0, round(weight * height))
    pad = 4 + bold + height // 3
    mask = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(mask).text((pad - left, pad - top), str(label), font=face, fill=255,
                              stroke_width=bold, stroke_fill=255)
    thin = round(-weight * height) if weight < 0 else 0
    eroded = mask.filter(ImageFilter.MinFilter(2 * thin + 1)) if thin else mask
    if np.asarray(eroded).sum() < 0.4 * np.asarray(mask).sum():  # a light face: keep it
        weight, eroded = 0.0, mask
    mask = eroded
    slant = float(rng.uniform(-0.1, 0.3)) if rng.random() < 0.6 else 0.0
    angle = float(rng.uniform(-8, 8))
    w = mask.width + int(abs(slant) * mask.height)
    mask = mask.transform((w, mask.height), Image.Transform.AFFINE,
                          (1, slant, -max(slant, 0) * mask.height, 0, 1, 0),
                          resample=Image.Resampling.BICUBIC)
    mask = mask.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    what = (f"font {font.name}, {height}px, weight {weight:+.2f}, slant {slant:+.2f}, "
            f"rotated {angle:+.0f} deg")
    return mask.crop(mask.getbbox() or (0, 0, 1, 1)), what


def on_paper(mask, rng: np.random.Generator, low_res: bool) -> tuple[bytes, str, str, bool]:
    """The ink mask as a picture file: (bytes, suffix, what was done, light on dark?); a
    ``low_res`` one is upscaled 3-7x, pixelated or blurred, as a small picture enlarged."""
    from PIL import Image, ImageFilter

    dark_on_light = rng.random() < 0.67
    ink, paper = ((INKS[rng.integers(len(INKS))], PAPERS[rng.integers(len(PAPERS))])
                  if dark_on_light else
                  (CHALKS[rng.integers(len(CHALKS))], BOARDS[rng.integers(len(BOARDS))]))
    side = max(mask.size)
    pad = rng.integers(max(1, side // 20), max(2, (4 * side) // 5) + 1, size=4)  # l, t, r, b
    canvas = Image.new("RGB", (int(mask.width + pad[0] + pad[2]),
                               int(mask.height + pad[1] + pad[3])), paper)
    canvas.paste(Image.new("RGB", mask.size, ink), (int(pad[0]), int(pad[1])), mask)
    upscaled = ""
    if low_res:
        factor = int(rng.integers(3, 8))
        how = [Image.Resampling.NEAREST, Image.Resampling.BILINEAR][int(rng.integers(2))]
        canvas = canvas.resize((canvas.width * factor, canvas.height * factor), how)
        upscaled = f", upscaled x{factor} {how.name.lower()}"
    blur = float(rng.choice([0, 0, 0, 0.6]))
    if blur:
        canvas = canvas.filter(ImageFilter.GaussianBlur(blur))
    jpeg = rng.random() < 0.5
    if jpeg:
        noise = rng.normal(0, float(rng.choice([0, 4, 8])), (canvas.height, canvas.width, 1))
        canvas = Image.fromarray(np.clip(np.asarray(canvas, np.float32) + noise, 0, 255)
                                 .astype(np.uint8))
    if rng.random() < 0.5:
        canvas = canvas.convert("L")
    buf = io.BytesIO()
    canvas.save(buf, format="JPEG" if jpeg else "PNG",
                **({"quality": int(rng.integers(70, 95))} if jpeg else {"optimize": True}))
    what = f"{canvas.width}x{canvas.height}{upscaled}{', blur' if blur else ''}"
    return buf.getvalue(), ".jpg" if jpeg else ".png", what, not dark_on_light


def _height(rng: np.random.Generator) -> int:
    """Digit height in pixels: a quarter low resolution (8-16), the rest 20-120."""
    return int(rng.integers(8, LOW_RES + 1) if rng.random() < 0.25 else rng.integers(20, 121))


def make(out: Path = OUT_DIR, per_class: int = PER_CLASS, seed: int = SEED) -> list[dict]:
    """Write ``per_class`` pictures of each digit (half fonts, half strokes) and labels.csv."""
    rng = np.random.default_rng(seed)
    faces = fonts()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("digit-*"):
        old.unlink()
    rows = []
    for n in range(10 * per_class):
        label, kind = n % 10, ("font", "strokes")[(n // 10) % 2]
        height = _height(rng)
        if kind == "font":
            mask, what = font_digit(label, faces[int(rng.integers(len(faces)))], rng, height)
        else:
            mask, what = strokes.draw(label, rng, height)
        low_res = height <= LOW_RES
        data, suffix, paper, light_on_dark = on_paper(mask, rng, low_res)
        name = f"digit-{n:04d}{suffix}"
        (out / name).write_bytes(data)
        rows.append({"file": name, "label": label, "kind": kind, "low_res": int(low_res),
                     "light_on_dark": int(light_on_dark), "made_by": f"{what}; {paper}"})
    with open(out / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows
