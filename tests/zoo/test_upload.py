"""Upload to a real Hypha artifact manager (local server + moto S3), byte-exact, review requested, never published."""

from __future__ import annotations

import asyncio
import hashlib
import io
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import yaml
from helpers import assert_one_line_error, export_helpers, run_cli

from bmz_cosdd.errors import UserError
from bmz_cosdd.export.package_content import Maintainer
from bmz_cosdd.export.package_zip import build_package
from bmz_cosdd.zoo.upload import REVIEW_STATUS, plan_upload, upload_package
from bmz_cosdd.export.validate import FormatResult


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("upload")
    # TorchScript only: upload validates, and the stand-in's state-dict architecture is the tests' own Python (not
    # bmz-cosdd's), which validation refuses to run (see tests/zoo/test_untrusted_packages.py)
    content = replace(export_helpers().make_content(folder / "src", state_dict=False),
                      maintainers=[Maintainer("bmz-cosdd-tester")])
    return build_package(content, folder / "standin.zip")


@pytest.fixture(scope="module")
def unmaintained(tmp_path_factory) -> Path:
    """A package that names no maintainer (as every package did before --maintainer)."""
    folder = tmp_path_factory.mktemp("unmaintained")
    return build_package(export_helpers().make_content(folder / "src"), folder / "nobody.zip")


PASSED = [FormatResult("torchscript", True, []), FormatResult("pytorch_state_dict", True, [])]


async def _read_back(server, token: str, artifact_id: str, names: list[str]) -> dict:
    from hypha_rpc import connect_to_server

    api = await connect_to_server({"server_url": server.url, "token": token})
    try:
        manager = await api.get_service("public/artifact-manager")
        info = await manager.read(artifact_id, stage=True)
        stored = {}
        async with httpx.AsyncClient() as client:
            for name in names:
                url = await manager.get_file(artifact_id, file_path=name, stage=True)
                stored[name] = (await client.get(url)).content
        try:
            await manager.commit(artifact_id)
            committed = True
        except Exception as exc:  # the uploader may stage but not publish
            committed = "permission" not in str(exc).lower() and str(exc)
        return {"manifest": info["manifest"], "files": stored, "committed": committed}
    finally:
        await api.disconnect()


@pytest.mark.slow
def test_upload_stores_every_file_byte_for_byte_and_only_requests_review(hypha_server, package, tmp_path):
    token = hypha_server.user_token("alice")
    plan = plan_upload(package, hypha_server.url, validation=PASSED)
    progress = []
    result = upload_package(plan, token, on_file=lambda name, done, total: progress.append((name, done, total)))
    assert result.status == REVIEW_STATUS and result.artifact_id.startswith("bioimage-io/")
    alias = result.alias
    assert "-" in alias and alias.split("-")[1] in ("otter", "heron", "lynx", "ibis", "marten", "newt", "puffin",
                                                     "wombat")
    assert result.url.endswith(alias) and sorted(result.sent) == sorted(f.name for f in plan.files)
    assert progress[-1][1] == progress[-1][2] == sum(f.size for f in plan.files)
    with zipfile.ZipFile(package) as zf:
        original = {name: zf.read(name) for name in zf.namelist() if not name.endswith("/")}
    back = asyncio.run(_read_back(hypha_server, token, result.artifact_id, list(original)))
    assert back["files"] == original  # byte for byte
    assert back["manifest"]["status"] == REVIEW_STATUS and back["manifest"]["name"] == plan.manifest["name"]
    assert back["committed"] is False  # the uploader cannot publish


@pytest.mark.slow
def test_resume_completes_a_draft_without_resending_intact_files(hypha_server, package, monkeypatch):
    token = hypha_server.user_token("bob")
    plan = plan_upload(package, hypha_server.url, validation=PASSED)
    real_client = httpx.Client
    calls = {"n": 0}

    class FailingSecondPut(real_client):
        def put(self, url, content=None, **kwargs):
            calls["n"] += 1
            if calls["n"] == 2:
                raise httpx.ConnectError("connection dropped")
            return super().put(url, content=content, **kwargs)

    monkeypatch.setattr(httpx, "Client", FailingSecondPut)
    with pytest.raises(UserError, match="--resume") as failure:
        upload_package(plan, token)
    message = str(failure.value)
    draft = message.split("--resume ")[1].split()[0]
    monkeypatch.setattr(httpx, "Client", real_client)
    result = upload_package(plan, token, resume=draft)
    assert result.artifact_id == draft and result.kept and result.sent
    assert sorted(result.kept + result.sent) == sorted(f.name for f in plan.files)


def test_a_failing_package_is_refused(package):
    failing = [FormatResult("torchscript", False, ["output differs"])]
    with pytest.raises(UserError, match="fails bioimageio.core"):
        plan_upload(package, "http://127.0.0.1:1", validation=failing)


@pytest.mark.slow
def test_bad_token_and_unreachable_server_are_one_line(hypha_server, package, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BIOIMAGEIO_HYPHA_UPLOAD_TOKEN", "not-a-token")
    code, out, err = run_cli(["upload", package, "--server", hypha_server.url, "--skip-validation"], capsys)
    assert code == 2 and err.strip().startswith("error:") and "token" in err and len(err.strip().splitlines()) == 1
    assert "not-a-token" not in out + err
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    code, out, err = run_cli(["upload", package, "--server", f"http://127.0.0.1:{closed}", "--skip-validation"],
                             capsys)
    assert code == 2 and "reach" in err and len(err.strip().splitlines()) == 1


def test_no_token_and_no_terminal_is_one_line_naming_the_variable(package, capsys, monkeypatch):
    monkeypatch.delenv("BIOIMAGEIO_HYPHA_UPLOAD_TOKEN", raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # not a terminal: nobody to ask
    code, out, err = run_cli(["upload", package, "--server", "http://127.0.0.1:1", "--skip-validation"], capsys)
    assert_one_line_error(code, out, err, "BIOIMAGEIO_HYPHA_UPLOAD_TOKEN")


def test_dry_run_prints_the_plan_and_sends_nothing(package, capsys, monkeypatch):
    monkeypatch.setenv("BIOIMAGEIO_HYPHA_UPLOAD_TOKEN", "secret-value-123")
    code, out, err = run_cli(["upload", package, "--dry-run", "--server", "http://127.0.0.1:1"], capsys)
    assert code == 0, err
    with zipfile.ZipFile(package) as zf:
        for name in zf.namelist():
            assert name in out
        rdf = zf.read("rdf.yaml")
    assert hashlib.sha256(rdf).hexdigest()[:16] in out and "secret-value-123" not in out + err
    assert "request-review" in out


@pytest.mark.slow
def test_a_stored_file_that_differs_is_one_line_and_leaves_the_draft_staged(hypha_server, package, monkeypatch):
    token = hypha_server.user_token("carol")
    plan = plan_upload(package, hypha_server.url, validation=PASSED)
    real_client = httpx.Client

    class CorruptingPut(real_client):
        def put(self, url, content=None, **kwargs):
            return super().put(url, content=(content or b"") + b"\0", **kwargs)

    monkeypatch.setattr(httpx, "Client", CorruptingPut)
    with pytest.raises(UserError, match="differs from the package") as failure:
        upload_package(plan, token)
    assert "--resume" in str(failure.value) and "stays staged" in str(failure.value)
    assert len(str(failure.value).splitlines()) == 1


@pytest.mark.slow
def test_permission_denied_is_one_line(hypha_server, package):
    """Another user may not complete (or re-request review for) someone else's draft."""
    plan = plan_upload(package, hypha_server.url, validation=PASSED)
    mine = upload_package(plan, hypha_server.user_token("erin"))
    with pytest.raises(UserError, match="permission denied") as failure:
        upload_package(plan, hypha_server.user_token("mallory"), resume=mine.artifact_id)
    assert len(str(failure.value).splitlines()) == 1


def test_no_maintainer_and_no_terminal_is_one_line_naming_the_option(unmaintained, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # not a terminal: nobody to ask
    code, out, err = run_cli(["upload", unmaintained, "--dry-run", "--server", "http://127.0.0.1:1"], capsys)
    assert_one_line_error(code, out, err, "--maintainer")
    assert "no maintainer" in err and "validating" not in err  # refused before the long validation
    with pytest.raises(UserError, match="--maintainer"):
        plan_upload(unmaintained, "http://127.0.0.1:1", validation=PASSED)
    code, out, err = run_cli(["upload", unmaintained, "--dry-run", "--maintainer", "bad--name"], capsys)
    assert_one_line_error(code, out, err, "--maintainer")


def test_a_maintainer_is_asked_for_on_a_terminal_and_added_to_the_uploaded_rdf(unmaintained, capsys, monkeypatch):
    import typer

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    asked = []
    monkeypatch.setattr(sys, "stdin", Terminal(""))
    monkeypatch.setattr(typer, "prompt", lambda text, **kwargs: asked.append(text) or "octo-cat")
    code, out, err = run_cli(["upload", unmaintained, "--dry-run", "--skip-validation", "--server",
                              "http://127.0.0.1:1"], capsys)
    assert code == 0, err
    assert len(asked) == 1 and "maintainer" in asked[0]
    assert "maintained by octo-cat" in out and "local package is unchanged" in out
    plan = plan_upload(unmaintained, "http://127.0.0.1:1", validation=PASSED, maintainer="octo-cat")
    assert plan.manifest["maintainers"] == [{"github_user": "octo-cat"}]
    sent = plan.replaced["rdf.yaml"]
    assert yaml.safe_load(sent) == plan.manifest
    [rdf] = [f for f in plan.files if f.name == "rdf.yaml"]
    assert rdf.sha256 == hashlib.sha256(sent).hexdigest()
    with zipfile.ZipFile(unmaintained) as zf:
        assert "maintainers" not in yaml.safe_load(zf.read("rdf.yaml"))  # the local package is unchanged


def test_a_package_with_a_maintainer_needs_no_option(package):
    plan = plan_upload(package, "http://127.0.0.1:1", validation=PASSED)
    assert plan.manifest["maintainers"] == [{"github_user": "bmz-cosdd-tester"}] and not plan.replaced


@pytest.mark.slow
def test_the_added_maintainer_is_stored_with_the_draft(hypha_server, unmaintained):
    token = hypha_server.user_token("frank")
    plan = plan_upload(unmaintained, hypha_server.url, validation=PASSED, maintainer="octo-cat")
    result = upload_package(plan, token)
    back = asyncio.run(_read_back(hypha_server, token, result.artifact_id, ["rdf.yaml"]))
    assert back["files"]["rdf.yaml"] == plan.replaced["rdf.yaml"]
    assert back["manifest"]["maintainers"] == [{"github_user": "octo-cat"}]
