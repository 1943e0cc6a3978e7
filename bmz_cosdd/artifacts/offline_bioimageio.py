"""Keeping bioimageio.spec and bioimageio.core contained: off the network and quiet.

Every verb that reads or writes a bioimage.io package (package, predict, validate, check,
upload) runs spec and core inside these contexts; everything a local package needs is read
from the package itself.

Examples
--------
>>> import httpx
>>> with offline_bioimageio(), quiet_bioimageio():
...     httpx.get("https://bioimage.io")
Traceback (most recent call last):
...
httpx.ConnectError: offline: bmz-cosdd does not contact bioimage.io
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence


@contextmanager
def offline_bioimageio(github_users: Sequence[str] = ()) -> Iterator[None]:
    """Keep bioimageio.spec and bioimageio.core off the network while inside.

    Everything a local package needs is read from the package itself, but spec, when it
    performs IO checks (which ``bioimageio.core.test_model`` always forces), also

    - sends a request to every URL in the description (``git_repo``, cite ``url``); a
      failure is only a warning, but a black-holed network costs ``http_timeout``
      (10 s) per request;
    - looks every author's ``github_user`` up on the GitHub API; offline that raises.

    Inside this context every synchronous httpx request (spec's only HTTP client) fails
    at once with ``httpx.ConnectError``, and the ``github_users`` given count as known.
    The patch is process-wide: do not run other HTTP work in other threads meanwhile.
    """
    import httpx

    saved_handle = httpx.HTTPTransport.handle_request

    def refuse(self: Any, request: Any) -> Any:
        raise httpx.ConnectError(f"offline: bmz-cosdd does not contact {request.url.host}", request=request)

    try:
        from bioimageio.spec._internal import field_validation as fv

        known: set[str] = fv.KNOWN_GITHUB_USERS
    except (ImportError, AttributeError):  # pragma: no cover - other spec versions
        known = set()
    added = {u.lower() for u in github_users if u and u.lower() not in known}
    known.update(added)
    httpx.HTTPTransport.handle_request = refuse  # type: ignore[method-assign]
    try:
        yield
    finally:
        httpx.HTTPTransport.handle_request = saved_handle  # type: ignore[method-assign]
        known.difference_update(added)


@contextmanager
def quiet_bioimageio() -> Iterator[None]:
    """Silence bioimageio's loguru logging (DEBUG by default) while inside."""
    from loguru import logger

    logger.disable("bioimageio")
    try:
        yield
    finally:
        logger.enable("bioimageio")
