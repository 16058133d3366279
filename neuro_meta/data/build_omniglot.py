"""Build ``neuro_meta/data/omniglot.bin`` from the raw Omniglot files.

Usage::

    python -m neuro_meta.data.build_omniglot SOURCE_DIR [--out PATH]

``SOURCE_DIR`` holds ``images_background_small1.zip``, ``images_background_small2.zip``
and ``one_shot_runs.zip`` of the brendenlake/omniglot release (MIT licence). Their
SHA-256 are checked first (:data:`SOURCES`); any mismatch stops the build.

Preprocessing (exact, integer arithmetic -- no resampling filter whose rounding could
change between library versions): each 105x105 1-bit PNG (read with Pillow) is inverted
(ink = 1); a 28x28 pixel covers 3.75x3.75 source pixels, and its ink area is computed
exactly (source pixels weighted by their overlap with it, in 1/16ths of a pixel); the
pixel is 1 when at least half of its area is ink (>= 0.5, threshold on the exact area
average). Images are then bit-packed (``np.packbits``, 98 bytes each).

Content: the union of the two background zips (Greek and Latin are in both, with
identical files: kept once) -- 4,840 images, 242 characters, 8 alphabets, 20 drawers --
sorted by alphabet, character, drawer; per image its character id, alphabet id and
drawer (1..20, from the file name ``NNNN_DD.png``); the alphabet and character names; and
the 20 official one-shot runs (per run: 20 training images, one per class, 20 test items,
and each test item's class from ``class_labels.txt``). The output is deterministic
(byte-identical across builds): see :func:`neuro_meta.datasets.encode_omniglot`.
After writing, put the printed SHA-256 into ``neuro_meta.datasets.OMNIGLOT_SHA256``.
"""
import argparse
import hashlib
import io
import re
import sys
import zipfile
from pathlib import Path

import numpy as np

from neuro_meta.datasets import OMNIGLOT_SIDE, encode_omniglot

#: The raw files and their SHA-256 (from the release's README in SOURCE_DIR).
SOURCES = {
    "images_background_small1.zip":
        "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4",
    "images_background_small2.zip":
        "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f",
    "one_shot_runs.zip":
        "437c1eeab0af8484112e1b4cc0f3d541ec727f7c47b9b202da738af9dfd6c325",
}

SRC_SIDE = 105
N_DRAWERS = 20
N_RUNS = 20
N_WAYS = 20

_BACKGROUND = re.compile(r"^images_background_small[12]/([^/]+)/(character\d+)/(\d+)_(\d+)\.png$")
_LABEL_LINE = re.compile(r"^run(\d+)/test/item(\d+)\.png\s+run(\d+)/training/class(\d+)\.png$")


class BuildError(RuntimeError):
    """The raw files are missing, damaged or not as expected."""


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_sources(source_dir):
    """Check every raw file's SHA-256 against :data:`SOURCES` (before reading any)."""
    source_dir = Path(source_dir)
    for name, expected in SOURCES.items():
        path = source_dir / name
        if not path.is_file():
            raise BuildError(f"{path}: missing (need {', '.join(SOURCES)})")
        got = sha256_file(path)
        if got != expected:
            raise BuildError(f"{path}: SHA-256 mismatch, expected {expected}, got {got} "
                             "(damaged or a different release)")


def _area_weights():
    """(28, 105) integer overlaps, in quarter pixels, of target and source pixels (one
    target pixel spans 105/28 = 3.75 source pixels = 15 quarters)."""
    step = SRC_SIDE * 4 // OMNIGLOT_SIDE      # 15
    w = np.zeros((OMNIGLOT_SIDE, SRC_SIDE), dtype=np.int64)
    for i in range(OMNIGLOT_SIDE):
        for j in range(SRC_SIDE):
            w[i, j] = max(0, min((i + 1) * step, (j + 1) * 4) - max(i * step, j * 4))
    return w


_W = _area_weights()
_FULL = int(_W.sum(axis=1)[0]) ** 2           # ink area of a fully inked pixel: 225


def to_28(png_bytes, what):
    """A 105x105 PNG (black strokes on white) -> (28, 28) uint8, strokes 1."""
    from PIL import Image

    with Image.open(io.BytesIO(png_bytes)) as im:
        if im.size != (SRC_SIDE, SRC_SIDE):
            raise BuildError(f"{what}: expected {SRC_SIDE}x{SRC_SIDE} pixels, got {im.size}")
        grey = np.asarray(im.convert("L"))
    ink = (grey < 128).astype(np.int64)
    area = _W @ ink @ _W.T                    # exact ink area, in 1/16 source pixels
    return (2 * area >= _FULL).astype(np.uint8)


def read_background(source_dir):
    """{(alphabet, character, drawer): png bytes} of both background zips (files present
    in both must be identical)."""
    files = {}
    for zname in ("images_background_small1.zip", "images_background_small2.zip"):
        with zipfile.ZipFile(Path(source_dir) / zname) as z:
            for name in z.namelist():
                m = _BACKGROUND.match(name)
                if m is None:
                    continue
                key = (m.group(1), m.group(2), int(m.group(4)))
                data = z.read(name)
                if key in files and files[key] != data:
                    raise BuildError(f"{zname}:{name}: differs from the same file in the "
                                     "other background zip")
                files[key] = data
    return files


def read_runs(source_dir):
    """(train (20, 20, 28, 28), test (20, 20, 28, 28), answers (20, 20)) of the runs."""
    train = np.zeros((N_RUNS, N_WAYS, OMNIGLOT_SIDE, OMNIGLOT_SIDE), np.uint8)
    test = np.zeros_like(train)
    answers = np.full((N_RUNS, N_WAYS), -1, np.int64)
    with zipfile.ZipFile(Path(source_dir) / "one_shot_runs.zip") as z:
        for r in range(N_RUNS):
            run = f"run{r + 1:02d}"
            for j in range(N_WAYS):
                name = f"{run}/training/class{j + 1:02d}.png"
                train[r, j] = to_28(z.read(name), name)
                name = f"{run}/test/item{j + 1:02d}.png"
                test[r, j] = to_28(z.read(name), name)
            for line in z.read(f"{run}/class_labels.txt").decode("ascii").splitlines():
                if not line.strip():
                    continue
                m = _LABEL_LINE.match(line.strip())
                if m is None or int(m.group(1)) != r + 1 or int(m.group(3)) != r + 1:
                    raise BuildError(f"{run}/class_labels.txt: unexpected line {line!r}")
                answers[r, int(m.group(2)) - 1] = int(m.group(4)) - 1
            if sorted(answers[r]) != list(range(N_WAYS)):
                raise BuildError(f"{run}/class_labels.txt: answers are not a permutation "
                                 f"of the {N_WAYS} classes: {answers[r].tolist()}")
    return train, test, answers


def build(source_dir, out):
    """Verify the sources, convert them and write the data file ``out``; returns its
    SHA-256."""
    verify_sources(source_dir)
    files = read_background(source_dir)
    chars = sorted({(a, c) for a, c, _ in files})
    alphabets = sorted({a for a, _ in chars})
    keys = sorted(files)
    for a, c in chars:
        drawers = [d for aa, cc, d in keys if (aa, cc) == (a, c)]
        if drawers != list(range(1, N_DRAWERS + 1)):
            raise BuildError(f"{a}/{c}: expected drawers 1..{N_DRAWERS}, got {drawers}")
    char_id = {ac: i for i, ac in enumerate(chars)}
    images = np.stack([to_28(files[k], "/".join(map(str, k))) for k in keys])
    labels = np.array([char_id[(a, c)] for a, c, _ in keys], dtype=np.uint16)
    alphabet = np.array([alphabets.index(a) for a, _, _ in keys], dtype=np.uint8)
    drawer = np.array([d for _, _, d in keys], dtype=np.uint8)
    train, test, answers = read_runs(source_dir)
    n_pix = OMNIGLOT_SIDE * OMNIGLOT_SIDE
    header = {
        "format": "neuro_meta omniglot 1",
        "image_side": OMNIGLOT_SIDE,
        "sources": dict(sorted(SOURCES.items())),
        "preprocessing": "invert (strokes 1); exact area average of 105x105 onto 28x28; "
                         "pixel = 1 if ink area >= 0.5; np.packbits per image (98 bytes)",
        "alphabets": alphabets,
        "characters": [f"{a}/{c}" for a, c in chars],
        "citation": "Lake, Salakhutdinov & Tenenbaum, Science 350 (2015); "
                    "github.com/brendenlake/omniglot (MIT)",
    }
    arrays = {
        "images": np.packbits(images.reshape(len(images), n_pix), axis=-1),
        "labels": labels,
        "alphabet": alphabet,
        "drawer": drawer,
        "runs_train": np.packbits(train.reshape(N_RUNS, N_WAYS, n_pix), axis=-1),
        "runs_test": np.packbits(test.reshape(N_RUNS, N_WAYS, n_pix), axis=-1),
        "runs_answers": answers.astype(np.uint8),
    }
    blob = encode_omniglot(header, arrays)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(blob)
    tmp.replace(out)
    return hashlib.sha256(blob).hexdigest()


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m neuro_meta.data.build_omniglot",
        description="Build neuro_meta's Omniglot data file from the raw release zips.")
    parser.add_argument("source_dir", metavar="SOURCE_DIR",
                        help="folder with images_background_small1.zip, "
                             "images_background_small2.zip and one_shot_runs.zip")
    parser.add_argument("--out", default=str(Path(__file__).with_name("omniglot.bin")),
                        help="output file (default: the package's omniglot.bin)")
    args = parser.parse_args(argv)
    try:
        digest = build(args.source_dir, args.out)
    except BuildError as err:
        print(f"build_omniglot: error: {err}", file=sys.stderr)
        return 2
    size = Path(args.out).stat().st_size
    print(f"wrote {args.out}: {size} bytes, SHA-256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
