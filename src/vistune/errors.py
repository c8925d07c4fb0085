"""Exceptions the CLI turns into one-line messages.

Every error a user can cause (bad file, bad column, bad config, unreachable host) is a
`VistuneError` subclass whose message names the file/row/field and the fix. Anything else
is a bug and keeps its traceback.
"""


class VistuneError(Exception):
    """Base for errors caused by input, configuration or environment, not by a bug."""


class ConfigError(VistuneError):
    """A config file or override is invalid (unknown key, bad value, impossible combination)."""


class DataError(VistuneError):
    """A source, dataset directory, column or row is unusable."""


class DownloadError(VistuneError):
    """An image URL could not be fetched or was refused (private host, too large, 4xx)."""


class ImageError(VistuneError):
    """A file is not a decodable image, or exceeds the size limits.

    `kind` says which, so a caller can answer in its own terms (serve: 400/413/415):
    "empty", "not_image", "format", "too_large", "unreadable" (the file could not be read)
    or "corrupt" (the decoder failed, whatever exception it raised).
    """

    def __init__(self, message: str, kind: str = "corrupt") -> None:
        super().__init__(message)
        self.kind = kind


class ModelError(VistuneError):
    """A model folder, hub id or checkpoint cannot be loaded or is inconsistent."""
