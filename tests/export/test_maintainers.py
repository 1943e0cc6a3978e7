"""A package names who maintains it (rdf ``maintainers``), checked offline: no GitHub look-up, no network."""

from __future__ import annotations

import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from helpers import assert_one_line_error, export_helpers, run_cli, tiny_blind_spot_config

pytest.importorskip("bioimageio.core")

from bmz_cosdd.errors import UserError  # noqa: E402
from bmz_cosdd.export.package import load_meta  # noqa: E402
from bmz_cosdd.export.package_content import Maintainer, check_content, check_github_user  # noqa: E402
from bmz_cosdd.export.package_zip import build_package  # noqa: E402
from bmz_cosdd.export.validate import validate_package  # noqa: E402

MISSING = "Missing `maintainers`"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    return export_helpers().block_network(monkeypatch)


@pytest.fixture(scope="module")
def n2v_run(tmp_path_factory, noisy_stack) -> Path:
    from bmz_cosdd.training.session import train

    run = tmp_path_factory.mktemp("runs") / "n2v"
    train(tiny_blind_spot_config("n2v", noisy_stack), run, progress=False)
    return run


def _rdf(package: Path) -> dict:
    with zipfile.ZipFile(package) as zf:
        return yaml.safe_load(zf.read("rdf.yaml"))


@pytest.mark.slow
def test_package_with_maintainer_names_it_and_no_longer_warns(n2v_run, tmp_path, capsys, _offline):
    out = tmp_path / "n2v.zip"
    code, stdout, err = run_cli(["package", n2v_run, "--out", out, "--maintainer", "no-such-user-bmz-cosdd",
                                 "--force"], capsys)  # a 6-step run is flagged as worse than its input
    assert code == 0, err
    assert _rdf(out)["maintainers"] == [{"github_user": "no-such-user-bmz-cosdd"}]
    assert MISSING not in stdout + err and "maintainers" not in stdout + err
    assert _offline == []  # spec looked no GitHub user up: not one connection attempted


def test_malformed_maintainer_is_one_line_and_writes_nothing(n2v_run, tmp_path, capsys, _offline):
    for bad in ("bad--name", "-leading", "trailing-", "has space", "x" * 40, "under_score"):
        code, out, err = run_cli(["package", n2v_run, "--out", tmp_path / "m.zip", "--maintainer", bad], capsys)
        assert_one_line_error(code, out, err, "--maintainer")
        assert "GitHub user name" in err
    assert not (tmp_path / "m.zip").exists() and _offline == []


def test_github_user_names_follow_githubs_rule():
    for good in ("a", "octocat", "octo-cat", "a1-b2-c3", "x" * 39):
        assert check_github_user(good) == good
    assert check_github_user(" @octocat ") == "octocat"
    for bad in ("", "-a", "a-", "a--b", "a_b", "a.b", "x" * 40, "Constantin Pape"):
        with pytest.raises(UserError, match="not a GitHub user name"):
            check_github_user(bad)


def test_maintainers_from_the_meta_yaml(tmp_path):
    meta = tmp_path / "meta.yaml"
    meta.write_text("name: My model\nmaintainers:\n  - octocat\n  - github_user: ada-l\n    name: Ada Lovelace\n")
    assert load_meta(meta).maintainers == [{"github_user": "octocat"},
                                           {"github_user": "ada-l", "name": "Ada Lovelace"}]
    assert load_meta(meta, maintainers=["someone"]).maintainers == [{"github_user": "someone"}]  # CLI on top
    meta.write_text("maintainers: [{github_user: bad--name}]\n")
    with pytest.raises(UserError, match="not a GitHub user name"):
        load_meta(meta)
    meta.write_text("maintainers: [{github_user: octocat, email: x@y.z}]\n")
    with pytest.raises(UserError, match="github_user and name only"):
        load_meta(meta)


@pytest.mark.slow
def test_built_package_validates_offline_without_the_warning(tmp_path, _offline):
    helpers = export_helpers()
    content = replace(helpers.make_content(tmp_path / "src", state_dict=False),  # TorchScript: no Python to trust
                      maintainers=[Maintainer("no-such-user-bmz-cosdd", name="Test Person")])
    package = build_package(content, tmp_path / "m.zip")
    assert _rdf(package)["maintainers"] == [{"name": "Test Person", "github_user": "no-such-user-bmz-cosdd"}]
    results = validate_package(package, trust_code=True)  # the stand-in's architecture is the tests' own Python
    assert all(r.passed for r in results)
    assert not any(MISSING in w for r in results for w in r.warnings)
    assert _offline == []
    with pytest.raises(ValueError, match="not a GitHub user name"):
        check_content(replace(content, maintainers=[Maintainer("bad--name")]))
