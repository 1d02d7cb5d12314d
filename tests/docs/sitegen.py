"""The site's generators (scripts/docs_reference.py, scripts/docs_artifacts.py), imported as the
MkDocs hook imports them: scripts/ is not a package, so its folder goes on sys.path."""

from __future__ import annotations

import sys

from tests.server_process import ROOT

if str(ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(ROOT / "scripts"))

import docs_artifacts as artifacts
import docs_reference as reference
import docs_site as hooks

__all__ = ["artifacts", "hooks", "reference"]
