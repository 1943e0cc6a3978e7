"""Former home of the package code, kept only for the two lazy imports in ``bmz_cosdd/cli.py``.

The package content and its checks live in :mod:`bmz_cosdd.export.package_content`, the
description in :mod:`bmz_cosdd.export.describe`, the test outputs in
:mod:`bmz_cosdd.export.core_outputs`, the zip writing in :mod:`bmz_cosdd.export.package_zip`
and the reading of packages in :mod:`bmz_cosdd.artifacts`. Remove this module once the CLI
imports only :mod:`bmz_cosdd.api` (issue 16, item 3).
"""

from bmz_cosdd.artifacts.package_reader import read_package_descr
from bmz_cosdd.export.package_content import check_github_user

__all__ = ["check_github_user", "read_package_descr"]
