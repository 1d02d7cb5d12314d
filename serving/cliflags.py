"""The one repository flag every command takes: ``--model-repo DIR``.

serve, batch, export, validate-repo, demo-models (and any new command) add it through
``add_model_repo`` and read it back through ``model_repo``, so the spelling, its aliases and
how a value is parsed live here only. Older spellings stay accepted: ``--repo`` on every
command, and the positional folder of ``validate-repo`` and ``demo-models``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from serving.settings import REPOSITORY_URI

FLAG = "--model-repo"
DEFAULT = Path("model_repo")
"""Every command's repository when none is named (serve's SERVING_MODEL_REPO default too)."""
ALIASES = ("--repo",)
_POSITIONAL = "model_repo_positional"


def path_or_uri(value: str) -> Path | str:
    """A folder as a Path; an object-store URI (``s3://bucket/prefix``) kept as text, which a
    Path would mangle (``s3:/bucket``)."""
    return value if REPOSITORY_URI.match(value) else Path(value)


def add_model_repo(
    parser: argparse.ArgumentParser,
    *,
    positional: bool = False,
    uri: bool = False,
    help: str = f"the model repository (default ./{DEFAULT})",
) -> None:
    """``--model-repo DIR`` (alias ``--repo``) on ``parser``; ``positional`` also accepts the folder
    as an optional positional argument (the older spelling of validate-repo and demo-models);
    ``uri`` also accepts an object-store URI (serve: serving/repository/remote.py)."""
    alias = f"{', '.join(ALIASES)} is an accepted alias" + (", as is a positional DIR" if positional else "")
    parser.add_argument(
        FLAG,
        *ALIASES,
        dest="model_repo",
        type=path_or_uri if uri else Path,
        default=None,
        metavar="DIR|URI" if uri else "DIR",
        help=f"{help}; {alias}",
    )
    if positional:
        parser.add_argument(
            _POSITIONAL,
            nargs="?",
            type=Path,
            metavar="DIR",
            help=f"the same as {FLAG} (older spelling, accepted)",
        )


def model_repo(args: argparse.Namespace) -> Path | None:
    """The repository the command line names (flag, alias or positional folder), None when it
    names none. Two different folders at once is an error (one line, exit 1)."""
    flag: Path | None = getattr(args, "model_repo", None)
    folder: Path | None = getattr(args, _POSITIONAL, None)
    if flag is not None and folder is not None and flag != folder:
        raise SystemExit(f"serving: error: two repositories given: {folder} and {FLAG} {flag}")
    return flag if flag is not None else folder


def model_repo_or_default(args: argparse.Namespace) -> Path:
    """``model_repo(args)``, or ./model_repo when the command line names none."""
    return model_repo(args) or DEFAULT
