"""Reading a bioimage.io model package: its description, safely and offline, and the training state inside.

A package zip is read as untrusted input: its members and the files its description names
must stay inside it (:mod:`bmz_cosdd.artifacts.package_files`) before bioimageio.spec reads
anything, and spec reads it offline (:mod:`bmz_cosdd.artifacts.offline_bioimageio`).

Examples
--------
Not run as doctests: they need a package zip made by ``bmz-cosdd package`` (the tests make
one, see ``tests/export/test_package_cosdd.py``).

>>> descr = read_package_descr(Path("model.bioimageio.zip"))    # doctest: +SKIP
>>> state = read_training_state(Path("model.bioimageio.zip"))   # doctest: +SKIP
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any, Callable

from bmz_cosdd.artifacts.offline_bioimageio import offline_bioimageio, quiet_bioimageio
from bmz_cosdd.artifacts.package_files import check_files_inside, check_zip_members
from bmz_cosdd.errors import UserError

#: File name of the description inside a package.
RDF_NAME = "rdf.yaml"
#: The attachment that holds everything needed to continue training a bmz-cosdd package.
TRAINING_STATE = "training_state.pt"


def read_package_descr(path: Path) -> Any:
    """Load the model description of a package zip, offline.

    Parameters
    ----------
    path
        A package zip.

    Returns
    -------
    bioimageio.spec.model.v0_5.ModelDescr
        Its description, loaded without IO checks and without the network.

    Raises
    ------
    bmz_cosdd.errors.UserError
        If ``path`` is not a file, not a zip, has members escaping its folder (absolute
        paths or ``..``), names a file outside itself (a URL, an absolute path, ``..``; checked
        before spec reads anything, see :func:`bmz_cosdd.artifacts.package_files.check_files_inside`),
        or is not a valid bioimage.io model.
    """
    from bioimageio.spec import InvalidDescr, ValidationContext, load_description
    from bioimageio.spec.model import v0_5

    path = Path(path)
    names = check_zip_members(path)
    if RDF_NAME not in names and "bioimageio.yaml" not in names:
        raise UserError(f"package {path.name} has no rdf.yaml: not a bioimage.io model package")
    check_files_inside(path)
    try:
        with offline_bioimageio(), quiet_bioimageio(), ValidationContext(perform_io_checks=False, log_warnings=False):
            descr = load_description(path, perform_io_checks=False)
    except Exception as e:  # noqa: BLE001 - spec raises many kinds for broken files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"package {path.name} is not a bioimage.io model: {first}") from None
    if isinstance(descr, InvalidDescr):
        errors = [e for d in descr.validation_summary.details for e in d.errors]
        first = f"{'.'.join(map(str, errors[0].loc))}: {errors[0].msg}" if errors else "invalid description"
        raise UserError(f"package {path.name} is not a valid bioimage.io model: {first.splitlines()[0]}")
    if not isinstance(descr, v0_5.ModelDescr):
        raise UserError(f"package {path.name} is not a bioimage.io model (format 0.5): type {descr.type!r}")
    return descr


def read_training_state(package: str | Path, check_code: Callable[[str | Path], Any] | None = None) -> dict[str, Any]:
    """The training state a bmz-cosdd package carries (weights_only load; one-line errors).

    Only ``training_state.pt`` is read (tensors, ``weights_only=True``); no Python of the
    package ever runs here.

    Parameters
    ----------
    package
        A package zip written by ``bmz-cosdd package``.
    check_code
        Called with ``package`` once its description has been read and before its training
        state is: the caller's rule on the package's Python (``train --from`` refuses a
        package whose Python bmz-cosdd did not write, see
        :func:`bmz_cosdd.export.package_trust.require_trusted_code`), or None.

    Returns
    -------
    dict
        ``method``, ``model`` (state dict), ``config``, ``stats``, ``n_channels`` and ``step``.

    Raises
    ------
    bmz_cosdd.errors.UserError
        One line: not a package, files outside it, or no readable training state (and
        whatever ``check_code`` raises).
    """
    import torch

    read_package_descr(package)  # not a zip / escaping paths / files outside / not a model: one clear line
    if check_code is not None:
        check_code(package)
    with zipfile.ZipFile(package) as zf:
        names = [n for n in zf.namelist() if n.split("/")[-1] == TRAINING_STATE]
        if not names:
            raise UserError(f"{package} holds no {TRAINING_STATE}: it was not made by bmz-cosdd package")
        data = zf.read(names[0])
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign content: one line
        raise UserError(f"{package}: {TRAINING_STATE} is not readable ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or not {"method", "model", "config", "stats"} <= set(state):
        raise UserError(f"{package}: {TRAINING_STATE} is not a bmz-cosdd training state")
    return state
