"""The CLI is a thin skin over the API (issue 16, part 3).

``cli.py`` imports no module of bmz_cosdd but ``api``; nothing else under ``bmz_cosdd/`` imports
typer; every verb of the CLI is an API function with a numpydoc docstring.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bmz_cosdd"
CLI_MAY_IMPORT = {"bmz_cosdd.api"}
# Each verb of the CLI and the API function it calls.
VERBS = {
    "train": "train_from_options",
    "predict": "predict",
    "package": "package",
    "validate": "validate",
    "check": "check",
    "upload": "prepare_upload",
    "inspect": "inspect",
    "evaluate": "evaluate",
    "noise-model fit": "fit_noise_model",
    "demo": "demo",
}
# The variants of predict the router chooses among, and upload's second step.
VARIANTS = ("predict_run", "predict_package", "predict_out_of_core", "upload")


def imported_modules(path: Path) -> list[str]:
    """Every module ``path`` imports, anywhere in the file; ``from a import b`` counts as ``a.b`` when ``a`` is the
    package itself (``b`` may be a module), relative imports resolved from ``path``'s package."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            if module == "bmz_cosdd":
                names += [f"{module}.{alias.name}" for alias in node.names]
            else:
                names.append(module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__"):
            names += [arg.value for arg in node.args[:1] if isinstance(arg, ast.Constant)]
    return names


def test_cli_imports_only_the_api():
    ours = {name for name in imported_modules(PACKAGE / "cli.py") if name.split(".")[0] == "bmz_cosdd"}
    assert "bmz_cosdd.api" in ours
    assert ours <= CLI_MAY_IMPORT, sorted(ours - CLI_MAY_IMPORT)


def test_nothing_below_the_cli_imports_typer():
    offenders = [str(path.relative_to(PACKAGE.parent)) for path in sorted(PACKAGE.rglob("*.py"))
                 if path != PACKAGE / "cli.py"
                 and any(name.split(".")[0] == "typer" for name in imported_modules(path))]
    assert not offenders


def test_the_import_reader_sees_relative_and_package_imports():
    assert imported_modules(PACKAGE / "cli.py").count("typer") == 1
    assert "bmz_cosdd.methods.base" in imported_modules(PACKAGE / "methods" / "registry.py")


def test_every_verb_is_an_api_function_with_a_numpydoc_docstring():
    from bmz_cosdd import api, cli

    verbs = {command.name or command.callback.__name__ for command in cli.app.registered_commands}
    verbs |= {group.name for group in cli.app.registered_groups} - {"noise-model"}
    verbs |= {f"noise-model {command.name}" for command in cli.noise_app.registered_commands}
    assert verbs == set(VERBS)
    for name in [*VERBS.values(), *VARIANTS]:
        function = getattr(api, name)
        assert name in api.__all__ and inspect.isfunction(function), name
        doc = inspect.getdoc(function) or ""
        for section in ("Parameters\n----------", "Returns\n-------"):
            assert section in doc, (name, section)


def test_methods_declare_train_options_as_plain_data():
    from bmz_cosdd import api

    for method in api.list_methods():
        options = api.train_options(method.name)
        assert options[: len(api.TRAIN_OPTIONS)] == list(api.TRAIN_OPTIONS)
        for option in options:
            assert isinstance(option, api.CliOption)
            assert option.type in (int, float, str, bool) and option.help and option.panel, option
        names = [option.name for option in options]
        assert len(names) == len(set(names)), method.name
