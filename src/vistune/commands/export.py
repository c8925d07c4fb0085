"""`vistune export` (under construction in this change set)."""

from vistune.errors import VistuneError


def command() -> None:
    """Not built yet."""
    raise VistuneError("vistune export is not built yet")
