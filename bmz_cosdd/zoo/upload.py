"""Upload a validated package to the BioImage Model Zoo through the Hypha artifact manager.

The package becomes a *staged* model in the zoo's collection: its ``rdf.yaml`` is the
manifest, every file of the zip is sent by a raw HTTP PUT to a presigned URL (never a
multipart form, which stores the envelope instead of the file), read back and compared
by size and SHA-256, and then the draft's status asks for review. Curators publish;
this never commits. A failed upload leaves the draft staged and says so;
``resume`` completes it without sending again what is already stored intact.
"""

from __future__ import annotations

import asyncio
import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from bmz_cosdd.errors import UserError

DEFAULT_SERVER = "https://hypha.aicell.io"
COLLECTION = "bioimage-io/bioimage.io"
TOKEN_ENV = "BIOIMAGEIO_HYPHA_UPLOAD_TOKEN"
ALIAS_PATTERN = "{animal_adjective}-{animal}"
REVIEW_STATUS = "request-review"


@dataclass
class PackageFile:
    """One member of the package zip."""

    name: str
    size: int
    sha256: str


@dataclass
class UploadPlan:
    """What an upload sends: the manifest and every file, with sizes and hashes."""

    package: Path
    manifest: dict[str, Any]
    files: list[PackageFile]
    server: str
    collection: str = COLLECTION
    replaced: dict[str, bytes] = field(default_factory=dict)  # members sent instead of the zip's (rdf.yaml)

    def describe(self) -> str:
        total = sum(f.size for f in self.files)
        users = ", ".join(str(m.get("github_user")) for m in self.manifest.get("maintainers") or [])
        added = " (added to the uploaded rdf.yaml; the local package is unchanged)" if self.replaced else ""
        lines = [
            f"server {self.server}, collection {self.collection}: a staged model (manifest = rdf.yaml of"
            f" {self.manifest.get('name', '?')!r}), status {REVIEW_STATUS!r} (curators publish)",
            f"maintained by {users}{added}",
            f"{len(self.files)} files, {total / 1e6:.2f} MB, each by raw PUT and then read back and compared:",
        ]
        lines += [f"  {f.name}  {f.size} bytes  sha256 {f.sha256[:16]}..." for f in self.files]
        return "\n".join(lines)


@dataclass
class UploadResult:
    """The staged draft and its state."""

    artifact_id: str
    alias: str
    url: str
    status: str
    sent: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def package_maintainers(package: str | Path) -> list[str]:
    """The GitHub users a package names as its maintainers (none: an empty list); one-line errors for a bad zip."""
    from bmz_cosdd.artifacts.package_reader import read_package_descr

    descr = read_package_descr(Path(package))
    return [str(m.github_user) for m in getattr(descr, "maintainers", None) or [] if m.github_user]


def no_maintainer_error(package: Path) -> UserError:
    """The one-line refusal of a package that names no maintainer and was given none."""
    return UserError(
        f"{Path(package).name} names no maintainer, which bioimage.io needs: give --maintainer GITHUB_USER (yours),"
        " or repackage with bmz-cosdd package --maintainer"
    )


def plan_upload(package: str | Path, server: str = DEFAULT_SERVER, validation: list | None = None,
                maintainer: str | None = None, trust_code: bool = False) -> UploadPlan:
    """Check the package (loads, names a maintainer, passes bioimageio.core's test) and list what an upload sends.

    ``trust_code`` lets the test run Python from the package that bmz-cosdd did not write
    (see :func:`~bmz_cosdd.export.validate.validate_package`).

    ``maintainer`` (a GitHub user name, checked offline) is added to the uploaded ``rdf.yaml`` and manifest
    when the package does not name it already; the local package is not changed. A package that names no
    maintainer and is given none is refused in one line naming ``--maintainer``: bioimage.io needs one.
    """
    from bmz_cosdd.export.package_content import check_github_user
    from bmz_cosdd.export.validate import validate_package

    package = Path(package)
    named = package_maintainers(package)  # also: the package loads
    user = None if maintainer is None else check_github_user(maintainer, "--maintainer")
    if not named and user is None:
        raise no_maintainer_error(package)
    results = validation if validation is not None else validate_package(package, trust_code=trust_code)
    failed = [r for r in results if not r.passed]
    if failed:
        details = "; ".join(f"{r.weight_format}: {r.details[0] if r.details else 'failed'}" for r in failed)
        raise UserError(f"{package.name} fails bioimageio.core's test ({details}); it is not uploaded")
    files = []
    replaced: dict[str, bytes] = {}
    with zipfile.ZipFile(package) as zf:
        manifest = yaml.safe_load(zf.read("rdf.yaml"))
        if user is not None and user.lower() not in {n.lower() for n in named}:
            manifest["maintainers"] = list(manifest.get("maintainers") or []) + [{"github_user": user}]
            replaced["rdf.yaml"] = yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True).encode()
        for info in zf.infolist():
            if info.is_dir():
                continue
            data = replaced.get(info.filename) or zf.read(info.filename)
            files.append(PackageFile(info.filename, len(data), hashlib.sha256(data).hexdigest()))
    return UploadPlan(package, manifest, files, server.rstrip("/"), replaced=replaced)


def upload_package(
    plan: UploadPlan,
    token: str,
    resume: Optional[str] = None,
    on_file: Optional[Callable[[str, int, int], None]] = None,
    timeout: float = 60.0,
) -> UploadResult:
    """Send ``plan`` to its server as a staged model and request review.

    Parameters
    ----------
    plan
        From :func:`plan_upload`.
    token
        The uploader's Hypha token (never printed or logged here).
    resume
        The artifact id of a draft left by an earlier, failed upload: files already
        stored intact are kept, the others sent.
    on_file
        Called with (file name, bytes done, bytes total) as the upload advances.
    """
    return asyncio.run(_upload(plan, token, resume, on_file, timeout))


async def _connect(server: str, token: str, timeout: float) -> Any:
    from hypha_rpc import connect_to_server

    try:
        return await asyncio.wait_for(
            connect_to_server({"server_url": server, "token": token, "method_timeout": timeout}), timeout
        )
    except asyncio.TimeoutError:
        raise UserError(f"the server {server} did not answer within {timeout:.0f} s") from None
    except (OSError, ConnectionError) as exc:
        text = str(exc)
        if "authentication" in text.lower() or "token" in text.lower():
            raise UserError(f"the server {server} refused the token (bad or expired); get a new one and set"
                            f" {TOKEN_ENV}") from None
        raise UserError(f"cannot reach the server {server} ({_first_line(text)})") from None
    except Exception as exc:  # hypha-rpc raises plain Exceptions for refused logins
        text = str(exc)
        if "authentication" in text.lower() or "token" in text.lower():
            raise UserError(f"the server {server} refused the token (bad or expired); get a new one and set"
                            f" {TOKEN_ENV}") from None
        raise UserError(f"cannot connect to {server} ({_first_line(text)})") from None


def _first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return (lines[-1] if lines else "no detail")[:200]


def _remote_error(exc: Exception, doing: str, draft: str | None) -> UserError:
    text = _first_line(str(exc))
    state = (f"; the draft {draft} stays staged (not published): rerun with --resume {draft}" if draft
             else "; nothing was created")
    if "permission" in text.lower():
        return UserError(f"permission denied while {doing} ({text}){state}")
    return UserError(f"the server failed while {doing} ({text}){state}")


async def _upload(
    plan: UploadPlan, token: str, resume: Optional[str], on_file: Optional[Callable[[str, int, int], None]],
    timeout: float,
) -> UploadResult:
    import httpx

    server = await _connect(plan.server, token, timeout)
    draft: str | None = resume
    try:
        manager = await server.get_service("public/artifact-manager")
        if resume:
            try:
                artifact = await manager.read(resume, stage=True)
            except Exception as exc:
                raise _remote_error(exc, f"reading the draft {resume}", None) from None
        else:
            try:
                artifact = await manager.create(
                    parent_id=plan.collection, alias=ALIAS_PATTERN, type="model", manifest=plan.manifest, stage=True
                )
            except Exception as exc:
                raise _remote_error(exc, f"creating a staged model in {plan.collection}", None) from None
        draft = artifact["id"]
        stored = await _stored_hashes(manager, draft, plan, httpx, timeout) if resume else {}
        sent, kept = [], []
        total = sum(f.size for f in plan.files)
        done = 0
        with zipfile.ZipFile(plan.package) as zf, httpx.Client(timeout=timeout) as client:
            for member in plan.files:
                if stored.get(member.name) == member.sha256:
                    kept.append(member.name)
                    done += member.size
                    continue
                try:
                    url = await manager.put_file(draft, file_path=member.name)
                except Exception as exc:
                    raise _remote_error(exc, f"asking where to put {member.name}", draft) from None
                data = plan.replaced.get(member.name) or zf.read(member.name)
                try:
                    reply = client.put(url, content=data)  # the raw bytes, no multipart envelope
                except httpx.HTTPError as exc:
                    raise _remote_error(exc, f"sending {member.name}", draft) from None
                if reply.status_code >= 300:
                    raise _remote_error(Exception(f"HTTP {reply.status_code}"), f"sending {member.name}", draft)
                sent.append(member.name)
                done += member.size
                if on_file is not None:
                    on_file(member.name, done, total)
        stored = await _stored_hashes(manager, draft, plan, httpx, timeout)
        for member in plan.files:
            if stored.get(member.name) != member.sha256:
                found = stored.get(member.name)
                how = f"sha256 {found[:16]} instead of {member.sha256[:16]}" if found else "missing or of another size"
                raise UserError(
                    f"the stored {member.name} differs from the package ({how}); the draft {draft} stays staged"
                    f" (not published): rerun with --resume {draft}"
                )
        manifest = dict(plan.manifest)
        manifest["status"] = REVIEW_STATUS
        try:
            await manager.edit(draft, manifest=manifest, stage=True)
        except Exception as exc:
            raise _remote_error(exc, "requesting review", draft) from None
        alias = str(artifact.get("alias") or draft.split("/")[-1])
        workspace = plan.collection.split("/")[0]
        url = (f"https://bioimage.io/#/artifacts/{alias}" if plan.server == DEFAULT_SERVER
               else f"{plan.server}/{workspace}/artifacts/{alias}")
        return UploadResult(draft, alias, url, REVIEW_STATUS, sent, kept)
    finally:
        await server.disconnect()


async def _stored_hashes(manager: Any, draft: str, plan: UploadPlan, httpx: Any, timeout: float) -> dict[str, str]:
    """SHA-256 of every package file stored in the draft (read back over HTTP)."""
    try:
        listing = await manager.list_files(draft, stage=True)
    except Exception as exc:
        raise _remote_error(exc, "listing the stored files", draft) from None
    sizes = {item["name"]: item.get("size") for item in listing if item.get("type") == "file"}
    # Nested members (folders in the zip) are listed per folder.
    for folder in {f.name.rsplit("/", 1)[0] for f in plan.files if "/" in f.name}:
        try:
            for item in await manager.list_files(draft, dir_path=folder, stage=True):
                sizes[f"{folder}/{item['name']}"] = item.get("size")
        except Exception:
            pass
    hashes = {}
    with httpx.Client(timeout=timeout) as client:
        for member in plan.files:
            if sizes.get(member.name) != member.size:
                continue
            try:
                url = await manager.get_file(draft, file_path=member.name, stage=True)
                reply = client.get(url, follow_redirects=True)
            except Exception as exc:
                raise _remote_error(exc, f"reading back {member.name}", draft) from None
            if reply.status_code == 200:
                hashes[member.name] = hashlib.sha256(reply.content).hexdigest()
    return hashes
