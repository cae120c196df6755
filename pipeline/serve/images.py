"""Reading a user's digit pictures and bringing them to MNIST's distribution.

Used by ``pipeline.serve.predict`` (no stage, no params). The models were trained on
MNIST, whose images are made in a precise way: a light digit on a black
background, scaled (keeping its aspect ratio) to fit a 20x20 box, anti-aliased,
and placed in a 28x28 frame so that its centre of mass is at the centre. A
photo of dark ink on white paper looks nothing like that, so ``to_mnist`` redoes
those steps (docs/serving.md lists them for users):

1. EXIF orientation applied; transparency composited onto white;
2. grey scale (ITU-R 601 luma);
3. background = median of the outer border (5 % of each side); if it is light
   (>= 128) the picture is inverted, so the digit becomes light on dark;
4. levels: the background level (90th percentile of the border, which also
   swallows noise and paper tint) becomes 0, the brightest pixel 255;
5. the digit's bounding box: pixels above 20 % after a 3x3 median filter (so
   specks of noise do not stretch the box); no such pixel = "no digit found";
6. the box is scaled so its longer side is 20 pixels (Lanczos, aspect kept);
7. pasted into 28x28 black so its centre of mass lands on pixel (14, 14).

Digits that were not drawn like MNIST's (fonts, markers, hairlines, small
pictures enlarged, other slants) need more between 5 and 6
(``pipeline.serve.normalise``, on the box resampled to 80 px): 5a square pixels
of an enlarged small picture undone, 5b smooth resampling, 5c the pen's width
brought into MNIST's 10th-90th percentile, 5d (optional, off) the slant sheared
away. ``Steps`` says which run: ``DEFAULT`` = 5a-5c, ``BASIC`` = none (as before
issue 25, for comparison; reports/pictures.md measures both).

IDX files (MNIST's own format, gzip-compressed or not) are already in that
form and are returned unchanged. Every failure raises ``ImageError`` whose
message is one line naming the file.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIZE = 28           # MNIST frame
BOX = 20            # MNIST fits the digit's longer side in 20 pixels
BORDER_SHARE = 0.05  # outer frame used to judge the background
INK_SHARE = 0.2     # a pixel belongs to the digit above this share of full brightness
IDX_IMAGES_MAGIC = 0x00000803


@dataclass(frozen=True)
class Steps:
    """Which of ``to_mnist``'s optional steps (5a-5d, ``pipeline.serve.normalise``) run."""
    low_res: bool = True    # 5a: square pixels of an enlarged small picture undone
    strokes: bool = True    # 5c: the pen's width brought into MNIST's range
    deskew: bool = False    # 5d: the slant sheared away (the models learnt MNIST's slants)


DEFAULT = Steps()
BASIC = Steps(low_res=False, strokes=False)  # steps 1-7 only, as before issue 25


class ImageError(ValueError):
    """A file cannot be turned into a 28x28 digit; the message names the file."""


def is_idx(head: bytes) -> bool:
    """IDX files start with two zero bytes, a type byte (0x08 = uint8) and ndim."""
    return len(head) >= 4 and head[:2] == b"\0\0" and head[2] == 0x08


def read_idx_images(path: Path, raw: bytes) -> np.ndarray:
    """(n, 28, 28) uint8 images from an IDX file's bytes (plain or gzip)."""
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ImageError(f"{path}: corrupted gzip data ({exc})") from None
    if not is_idx(raw):
        raise ImageError(f"{path}: not an image (PNG, JPEG or IDX expected)")
    ndim = raw[3]
    if ndim != 3:
        raise ImageError(f"{path}: IDX file with {ndim} dimension(s) holds no images "
                         f"(a labels file?); expected (n, rows, cols)")
    if len(raw) < 16:
        raise ImageError(f"{path}: IDX header ends early")
    n, rows, cols = struct.unpack(">3I", raw[4:16])
    if (rows, cols) != (SIZE, SIZE):
        raise ImageError(f"{path}: IDX images are {rows}x{cols}, the models read {SIZE}x{SIZE}")
    if len(raw) - 16 != n * rows * cols:
        raise ImageError(f"{path}: IDX header says {n} images, the file holds "
                         f"{len(raw) - 16} bytes of pixels")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows, cols)


def load(path: Path, steps: Steps = DEFAULT) -> np.ndarray:
    """(n, 28, 28) uint8 digits from a picture (n = 1) or an IDX file (n >= 0)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a folder") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not raw:
        raise ImageError(f"{path}: empty file")
    if raw[:2] == b"\x1f\x8b" or is_idx(raw):
        return read_idx_images(path, raw)
    import io

    try:
        with Image.open(io.BytesIO(raw)) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image (PNG, JPEG or IDX expected)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: unreadable image ({exc})") from None
    return to_mnist(_grey(img), path, steps)[None]


def _grey(img) -> np.ndarray:
    """Float grey levels 0-255; transparent areas count as white paper."""
    from PIL import Image

    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(paper, rgba)
    return np.asarray(img.convert("L"), dtype=np.float32)


def to_mnist(grey: np.ndarray, name: object = "image", steps: Steps = DEFAULT) -> np.ndarray:
    """A grey picture of one digit, any size and polarity -> 28x28 uint8, MNIST-style."""
    from PIL import Image, ImageFilter

    h, w = grey.shape
    if min(h, w) < 3:
        raise ImageError(f"{name}: image is too small ({w}x{h} pixels)")
    b = max(1, round(BORDER_SHARE * min(h, w)))
    border = np.concatenate([grey[:b].ravel(), grey[-b:].ravel(),
                             grey[:, :b].ravel(), grey[:, -b:].ravel()])
    if np.median(border) >= 128:  # light paper: make the ink the light part
        grey, border = 255.0 - grey, 255.0 - border
    floor = float(np.percentile(border, 90))
    span = float(grey.max()) - floor
    if span < 32:  # nothing stands out from the background
        raise ImageError(f"{name}: no digit found (the picture is blank or has no contrast)")
    levels = np.clip((grey - floor) * (255.0 / span), 0, 255).astype(np.uint8)

    smooth = np.asarray(Image.fromarray(levels).filter(ImageFilter.MedianFilter(3)))
    rows, cols = np.nonzero(smooth > INK_SHARE * 255)
    if rows.size == 0:
        raise ImageError(f"{name}: no digit found (only specks stand out from the background)")
    crop = levels[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
    if steps.low_res or steps.strokes or steps.deskew:
        crop = _normalised(crop, steps)
    return _centred(_fitted(crop))


def _normalised(crop: np.ndarray, steps: Steps) -> np.ndarray:
    """Steps 5a-5d (``pipeline.serve.normalise``): the box at 80 px, pen and slant like MNIST's."""
    from pipeline.serve import normalise

    work = normalise.to_work(normalise.unblock(crop) if steps.low_res else crop)
    if steps.strokes:
        work = normalise.normalise_strokes(work)
    if steps.deskew:
        work = normalise.deskew(work)
    rows, cols = np.nonzero(work > INK_SHARE * 255)  # the box again: strokes and shear moved it
    if rows.size == 0:  # nothing as bright as the box's threshold is left: keep it all
        return work
    return work[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]


def _fitted(crop: np.ndarray) -> np.ndarray:
    """Step 6: the box scaled so its longer side is 20 pixels (Lanczos, aspect kept)."""
    from PIL import Image

    ch, cw = crop.shape
    scale = BOX / max(ch, cw)
    size = (max(1, round(cw * scale)), max(1, round(ch * scale)))  # PIL: (width, height)
    image = (Image.fromarray(crop) if crop.dtype == np.uint8
             else Image.fromarray(crop.astype(np.float32), mode="F"))
    return np.asarray(image.resize(size, Image.Resampling.LANCZOS), dtype=np.float32)


def _centred(digit: np.ndarray) -> np.ndarray:
    """Step 7: pasted into 28x28 black with its centre of mass on pixel (14, 14)."""
    mass = digit.sum()
    ys, xs = np.indices(digit.shape)
    cy, cx = (ys * digit).sum() / mass, (xs * digit).sum() / mass
    top, left = round(SIZE / 2 - cy), round(SIZE / 2 - cx)  # MNIST: mass at (14, 14)
    # Keep the whole box inside the frame even if the centre of mass is off-centre.
    top = min(max(top, 0), SIZE - digit.shape[0])
    left = min(max(left, 0), SIZE - digit.shape[1])
    out = np.zeros((SIZE, SIZE), dtype=np.float32)
    out[top: top + digit.shape[0], left: left + digit.shape[1]] = digit
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
