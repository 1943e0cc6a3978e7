"""A package zip read as untrusted input: its members stay in their folder, and its files inside it.

A package zip from elsewhere is untrusted input. Before anything of it is loaded, every verb
that opens one (``predict``, ``validate``, ``check``, ``train --from``, ``upload``) holds it
to the files rule:

- **Members stay in their folder.** No member name is absolute or has a ``..`` component
  (:func:`check_zip_members`).
- **Files stay inside.** Every file the rdf names (weights, architecture source, test and
  sample tensors, covers, documentation, attachments, ...) must be a member of the zip: a
  URL (any scheme), an absolute path, a ``..`` component or a name the zip does not hold is
  refused in one line before anything is loaded, so nothing is read from elsewhere on the
  disk and nothing is fetched from the network (:func:`check_files_inside`).

Which Python a package may make bmz-cosdd run is the other rule, kept by
:mod:`bmz_cosdd.export.package_trust`.

Examples
--------
A package whose weights are an absolute path on the disk:

>>> import tempfile
>>> tmp = tempfile.TemporaryDirectory()
>>> package = Path(tmp.name) / "model.zip"
>>> with zipfile.ZipFile(package, "w") as zf:
...     zf.writestr("rdf.yaml", "weights:\\n  torchscript: {source: /home/me/weights.pt}\\n")
>>> check_zip_members(package)
['rdf.yaml']
>>> check_files_inside(package)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
bmz_cosdd.artifacts.package_files.PackageRefused: package model.zip names a file outside the package, ...: weights.torchscript.source is an absolute path ('/home/me/weights.pt')
>>> tmp.cleanup()
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from bmz_cosdd.errors import UserError

#: Keys whose values name files of the package (anywhere in the rdf, outside the skipped sections).
_FILE_KEYS = frozenset({
    "source", "documentation", "covers", "test_tensor", "sample_tensor", "attachments", "files", "icon",
    "test_inputs", "test_outputs", "sample_inputs", "sample_outputs", "dependencies",
})
#: Sections that name no package files bioimageio.core loads (free-form config, links, people, badges).
_SKIPPED_KEYS = frozenset({
    "config", "badges", "cite", "links", "git_repo", "authors", "maintainers", "uploader", "training_data", "id",
})
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


class PackageRefused(UserError):
    """A package breaks a rule for untrusted packages: a file outside it (this module), or Python
    that is not ours (:mod:`bmz_cosdd.export.package_trust`).

    A :class:`~bmz_cosdd.errors.UserError` (one line, exit code 2); its own type lets a
    verb that reports other problems of a package as findings (``check``) still refuse.
    """


def check_zip_members(path: Path) -> list[str]:
    """Member names of the zip at ``path``; UserError if any would escape its folder when extracted."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"package not found: {path}")
    if not path.is_file():
        raise UserError(f"package is not a file: {path}")
    if not zipfile.is_zipfile(path):
        raise UserError(f"package is not a zip file: {path}")
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"package is not a readable zip file: {path} ({e})") from None
    for name in names:
        p = PurePosixPath(name.replace("\\", "/"))
        if (
            p.is_absolute()
            or name.startswith(("/", "\\"))
            or re.match(r"^[A-Za-z]:", name)
            or ".." in p.parts
        ):
            raise UserError(f"package {path.name} has a member that escapes its folder: {name!r}")
    return names


def _rdf_member(names: list[str]) -> str:
    """The member bioimageio.spec reads as the description (spec's own rule when available)."""
    try:
        from bioimageio.spec._internal.io import identify_bioimageio_yaml_file_name

        return str(identify_bioimageio_yaml_file_name(names))
    except ImportError:  # pragma: no cover - other spec versions
        for name in ("rdf.yaml", "bioimageio.yaml", "model.yaml"):
            if name in names:
                return name
    except ValueError:
        pass
    raise UserError("no rdf.yaml: not a bioimage.io model package")


def _load_yaml(data: bytes) -> Any:
    """Parse YAML as bioimageio.spec does (its ruamel loader), so both see the same rdf."""
    try:
        from bioimageio.spec._internal.io_utils import read_yaml
    except ImportError:  # pragma: no cover - other spec versions
        import yaml

        return yaml.safe_load(data)
    import io

    return read_yaml(io.StringIO(data.decode("utf-8")))


def _read_rdf(package: Path) -> tuple[dict[str, Any], PurePosixPath, list[str]]:
    """The raw rdf mapping, the folder it sits in inside the zip and the zip's member names."""
    names = check_zip_members(package)
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise PackageRefused(f"package {package.name} holds two members named {duplicated[0]!r}: refused")
    try:
        member = _rdf_member(names)
    except UserError as exc:
        raise UserError(f"package {package.name} has {exc}") from None
    try:
        with zipfile.ZipFile(package) as zf:
            rdf = _load_yaml(zf.read(member))
    except Exception as exc:  # noqa: BLE001 - YAML and decoding errors of many kinds
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"package {package.name} is not a bioimage.io model: {member} is not YAML ({first})") from None
    if not isinstance(rdf, dict):
        raise UserError(f"package {package.name} is not a bioimage.io model: {member} holds no mapping")
    return rdf, _folder(member), names


def _folder(member: str) -> PurePosixPath:
    return PurePosixPath(*[p for p in PurePosixPath(member).parent.parts if p != "."])


def zip_member(base: PurePosixPath, value: str) -> str:
    """The zip member a relative file name in the rdf resolves to.

    Parameters
    ----------
    base
        The folder the rdf sits in inside the zip (see :func:`checked_rdf`).
    value
        A file name as the rdf gives it.

    Returns
    -------
    str
        The member name ("" for an empty name at the zip's root).
    """
    parts = [p for p in PurePosixPath(value.strip().replace("\\", "/")).parts if p != "."]
    return str(PurePosixPath(*base.parts, *parts)) if parts or base.parts else ""


def _file_refs(node: Any, where: str, key: str | None = None) -> list[tuple[str, str]]:
    """``(location, value)`` of every file name in ``node``; ``key`` is the key ``node`` sits under."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            k = str(k)
            if k in _SKIPPED_KEYS:
                continue
            found += _file_refs(v, f"{where}.{k}" if where else k, k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _file_refs(v, f"{where}[{i}]", key)
    elif isinstance(node, (str, int, float)) and not isinstance(node, bool) and key in _FILE_KEYS:
        if not (key == "icon" and isinstance(node, str) and len(node) <= 2):  # an icon may be an emoji
            found.append((where, str(node)))
    return found


def _outside(value: str, base: PurePosixPath, names: set[str]) -> str | None:
    """Why ``value`` (a file name in the rdf) is not a member of the package, or None."""
    text = value.strip()
    if re.match(r"^[A-Za-z]:[\\/]", text) or text.startswith(("/", "\\", "~")):
        return "an absolute path"
    if _SCHEME.match(text):
        return "a URL"
    if ".." in PurePosixPath(text.replace("\\", "/")).parts:
        return "a path that leaves the package (..)"
    if zip_member(base, text) not in names:
        return "a file the package does not hold"
    return None


def checked_rdf(package: Path) -> tuple[dict[str, Any], PurePosixPath]:
    """The raw rdf mapping and the folder it sits in inside the zip, once the files rule holds.

    Parameters
    ----------
    package
        A package zip.

    Returns
    -------
    tuple
        The rdf as parsed YAML, and its folder inside the zip (for :func:`zip_member`).

    Raises
    ------
    bmz_cosdd.errors.UserError, PackageRefused
        As :func:`check_files_inside`.
    """
    rdf, base, names = _read_rdf(package)
    held = set(names)
    for where, value in _file_refs(rdf, ""):
        why = _outside(value, base, held)
        if why is not None:
            raise PackageRefused(
                f"package {package.name} names a file outside the package, refused before loading anything:"
                f" {where} is {why} ({value!r})"
            )
    return rdf, base


def check_files_inside(package: str | Path) -> dict[str, Any]:
    """Refuse a package that names any file outside itself; return its raw rdf mapping.

    Runs before anything of the package is loaded: it reads the zip's member list and its
    rdf as plain YAML only.

    Parameters
    ----------
    package
        A package zip.

    Returns
    -------
    dict
        The rdf as parsed YAML.

    Raises
    ------
    bmz_cosdd.errors.UserError
        One line, if the zip is unreadable, has members escaping its folder, or has no rdf
        or one that is not YAML.
    PackageRefused
        One line, if the zip has two members of the same name, or its rdf names a file
        (weights, architecture source, test and sample tensors, covers, documentation,
        attachments, ...) by a URL, an absolute path, a path with ``..`` or a name the zip
        does not hold.
    """
    return checked_rdf(Path(package))[0]

