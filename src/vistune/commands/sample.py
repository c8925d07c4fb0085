"""`vistune sample` (under construction in this change set)."""

from vistune.errors import VistuneError


def command() -> None:
    """Not built yet."""
    raise VistuneError("vistune sample is not built yet")
