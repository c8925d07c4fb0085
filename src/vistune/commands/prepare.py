"""`vistune prepare` (under construction in this change set)."""

from vistune.errors import VistuneError


def command() -> None:
    """Not built yet."""
    raise VistuneError("vistune prepare is not built yet")
