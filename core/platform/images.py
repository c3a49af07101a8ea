"""Photos as Gridline keeps them: upright JPEGs of a bounded size, without their metadata."""

from __future__ import annotations

import io

from PIL import Image, ImageOps, UnidentifiedImageError

# A decompression bomb is refused, not decoded.
Image.MAX_IMAGE_PIXELS = 80_000_000


def resize_photo(data: bytes, side: int) -> bytes:
    """Any image Pillow reads -> a JPEG no larger than ``side`` on its longer side, turned
    upright, without its metadata (a phone's photo carries where it was taken). ValueError
    when it is not an image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = ImageOps.exif_transpose(image)
            image.thumbnail((side, side))
            if image.mode not in ("RGB", "L"):
                image = image.convert("RGB")
            out = io.BytesIO()
            image.save(out, "JPEG", quality=85, optimize=True)
            return out.getvalue()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError) as exc:
        raise ValueError(str(exc)) from exc
