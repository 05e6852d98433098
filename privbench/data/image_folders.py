"""A user's image folder: one folder per class (`root/<class>/<image>`), optionally inside one
folder per client (`root/<client>/<class>/<image>`), read with Pillow as grey-scale pixels.

Images become flat rows of pixels in [0, 1] (what the zoo's CNN and the gradient-inversion
attacks take); every image must be square and of one size, or is resized to `data.image_size`.
Every problem is one line naming the image or folder and the fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from privbench.data.records import Records, encode
from privbench.errors import PrivbenchError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm",
                  ".ppm")


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _images(folder: Path) -> list[Path]:
    return [p for p in _visible(folder) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def image_files(root: Path) -> list[tuple[str | None, str, Path]]:
    """(client or None, class, image path) of every image, in sorted order.

    Raises:
        PrivbenchError: one line when the folder holds no class folders, mixes client and
            class folders, or a class folder holds no image.
    """
    folders = [p for p in _visible(root) if p.is_dir()]
    if not folders:
        raise PrivbenchError(f"data.path = {str(root)!r}: no class folders there; put each "
                             "class's images in a folder named after the class")
    nested = [f for f in folders if any(p.is_dir() for p in _visible(f))]
    if nested and len(nested) != len(folders):
        flat = next(f for f in folders if f not in nested)
        raise PrivbenchError(f"data.path: {flat.name}/ holds images but {nested[0].name}/ holds "
                             "folders; use <class>/<image> throughout, or "
                             "<client>/<class>/<image> throughout")
    out: list[tuple[str | None, str, Path]] = []
    for top in folders:
        classes = [c for c in _visible(top) if c.is_dir()] if nested else [top]
        for cls in classes:
            images = _images(cls)
            shown = f"{top.name}/{cls.name}/" if nested else f"{cls.name}/"
            if not images:
                kinds = ", ".join(IMAGE_SUFFIXES[:4])
                raise PrivbenchError(f"data.path: {shown} holds no image ({kinds}, ...); add "
                                     "images or remove the folder")
            out += [(top.name if nested else None, cls.name, p) for p in images]
    return out


def read_image_folder(root: Path, image_size: int | None) -> Records:
    """Read and check a user's image folder.

    Args:
        root: the folder of class folders (or of client folders of class folders).
        image_size: resize every image to image_size x image_size; None: every image must be
            square and of the first image's size.

    Returns:
        The records: flat grey-scale pixels in [0, 1], class labels in folder-name order, and
        clients (folder-name order) when the folder has client folders.
    """
    from PIL import Image, UnidentifiedImageError

    files = image_files(root)
    rows, shape = [], None
    for _, _, path in files:
        name = str(path.relative_to(root))
        try:
            with Image.open(path) as im:
                im = im.convert("L")
                if image_size is not None:
                    im = im.resize((image_size, image_size), Image.Resampling.BILINEAR)
                pixels = np.asarray(im, dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError, ValueError) as e:
            reason = str(e).strip().splitlines()[0][:80] if str(e).strip() else type(e).__name__
            raise PrivbenchError(f"data.path: {name}: not a readable image ({reason}); replace "
                                 "or remove it") from None
        h, w = pixels.shape
        if image_size is None and h != w:
            raise PrivbenchError(f"data.path: {name} is {w}x{h} pixels, not square; set "
                                 f"data.image_size (e.g. {max(h, w)}) to resize every image")
        if shape is None:
            shape = (h, w)
        elif (h, w) != shape:
            raise PrivbenchError(f"data.path: {name} is {w}x{h} pixels, the first image "
                                 f"{shape[1]}x{shape[0]}; set data.image_size = {shape[0]} to "
                                 "resize every image")
        rows.append(pixels.reshape(-1))
    y, label_names = encode(np.array([c for _, c, _ in files]))
    if len(label_names) < 2:
        raise PrivbenchError(f"data.path = {str(root)!r}: one class folder "
                             f"({label_names[0]!r}); a classifier needs at least 2")
    owners = [o for o, _, _ in files]
    clients, client_names = encode(np.array(owners)) if owners[0] is not None else (None, ())
    return Records(np.stack(rows), y, clients, label_names, client_names, shape)
