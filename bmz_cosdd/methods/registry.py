"""The one place that maps method names to methods."""

from __future__ import annotations

from bmz_cosdd.errors import UserError
from bmz_cosdd.methods.base import Method

_METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` under its ``name``."""
    _METHODS[method.name] = method
    return method


def _load_builtin() -> None:
    # Importing a method package registers it; this order is the order of the CLI's list.
    import bmz_cosdd.methods.cosdd  # noqa: F401
    import bmz_cosdd.methods.n2v  # noqa: F401
    import bmz_cosdd.methods.divnoising  # noqa: F401, I001
    import bmz_cosdd.methods.hdn  # noqa: F401


def get_method(name: str) -> Method:
    """Return the registered method ``name`` or raise a one-line UserError."""
    _load_builtin()
    try:
        return _METHODS[name]
    except KeyError:
        raise UserError(f"unknown method {name!r} (known: {', '.join(sorted(_METHODS))})") from None


def all_methods() -> list[Method]:
    """Every registered method, in registration order."""
    _load_builtin()
    return list(_METHODS.values())
