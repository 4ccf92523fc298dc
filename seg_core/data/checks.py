"""Errors of datasets on disk, raised before any training (by a dataset's registered ``verify``)."""

from __future__ import annotations


class DataError(ValueError):
    """A dataset on disk is missing or malformed: ``path`` and what is wrong (and how to fix it)."""

    def __init__(self, path, message: str) -> None:
        self.path, self.message = path, message
        super().__init__(f"{path}: {message}")


def decoded_image(path, what: str = "image"):
    """The image at ``path``, opened and decoded in full (use it in a ``with``): a file that is
    not an image, or one cut short, is a :class:`DataError` naming it, not a decoder traceback
    in the middle of a run."""
    from PIL import Image

    try:
        im = Image.open(path)
        im.load()
    except (OSError, SyntaxError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
        raise DataError(path, f"not a readable {what} ({type(e).__name__}: {e})") from None
    return im
