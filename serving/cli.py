"""The ``serving`` command: serve, validate-repo, export, demo-models, rollout.

Flags override ``SERVING_*`` environment variables, which override defaults; the CLI builds
one Settings object and passes it down. Failures print one line (``serving: error: ...``)
and exit non-zero; the traceback goes to the log at debug level (``--log-level debug``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from serving.cliflags import add_model_repo, model_repo, model_repo_or_default
from serving.errors import ServingError
from serving.extras import without_extra
from serving.settings import Settings

EXAMPLES = {
    "serve": """examples:
  serving serve --model-repo model_repo
  serving serve --model-repo model_repo --http-port 9000 --grpc-port 9001 --strict
  SERVING_ADMIN_TOKEN=change-me serving serve   # enables the model control API""",
    "validate-repo": """example:
  serving validate-repo --model-repo model_repo   # prints every problem; exit 1 if any""",
    "export": """example:
  serving export booster.ubj --model cancer-onnx --model-repo model_repo
  # writes model_repo/cancer-onnx/<next version>/model.onnx only if the parity check passes""",
    "batch": """example:
  serving batch iris-xgb --model-repo model_repo --input rows.parquet --output scores.parquet""",
    "profile": """example:
  serving profile cancer-xgb --model-repo model_repo --data train.parquet --input-column input
  # writes model_repo/cancer-xgb/<newest version>/profile.json (model monitoring)""",
    "demo-data": """example:
  serving demo-data --output customers.parquet   # 569 rows: id, f0 ... f29""",
    "demo-models": """example:
  serving demo-models --model-repo model_repo   # byte-for-byte the committed demo models""",
    "rollout": """example:
  serving rollout start iris-xgb --mode inpod --server http://127.0.0.1:8080 --canary-version 2 --percent 10""",
    "rollout start": """example:
  serving rollout start iris-xgb --mode inpod --server http://127.0.0.1:8080 --canary-version 2 --percent 10""",
    "rollout status": """example:
  serving rollout status iris-xgb --mode inpod --server http://127.0.0.1:8080""",
    "rollout promote": """example:
  serving rollout promote iris-xgb --mode inpod --server http://127.0.0.1:8080""",
    "rollout rollback": """example:
  serving rollout rollback iris-xgb --mode inpod --server http://127.0.0.1:8080""",
    "rollout analyze": """example:
  serving rollout analyze iris-xgb --mode inpod --server http://127.0.0.1:8080 --prometheus http://127.0.0.1:9090""",
    "rollout auto": """example:
  serving rollout auto iris-xgb --mode inpod --server http://127.0.0.1:8080 --prometheus http://127.0.0.1:9090 --interval 5m""",
}
"""One example per command, shown at the end of its ``--help`` (tests check every command has one)."""


def _serve_flags(parser: argparse.ArgumentParser) -> None:
    add_model_repo(
        parser,
        uri=True,
        help="model repository: a folder, or an s3:// gs:// az:// https:// URI (default ./model_repo, "
        "env SERVING_MODEL_REPO)",
    )
    parser.add_argument(
        "--model-name",
        "--model_name",
        dest="model_name",
        help="serve a single-model folder (KServe /mnt/models) under this name, or only this model "
        "of a repository (env SERVING_MODEL_NAME)",
    )
    parser.add_argument("--host", help="address to bind (default 0.0.0.0, env SERVING_HOST)")
    parser.add_argument("--http-port", type=int, help="REST port (default 8080, env SERVING_HTTP_PORT)")
    parser.add_argument(
        "--grpc-port", type=int, help="gRPC port (default 8081, -1 disables; env SERVING_GRPC_PORT)"
    )
    parser.add_argument(
        "--workers", type=int, help="worker processes sharing the ports (default 1, env SERVING_WORKERS)"
    )
    parser.add_argument("--strict", action="store_true", default=None, help="exit if any model fails to load")
    parser.add_argument("--log-level", help="debug, info, warning, error (default info)")


def settings_from(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    repo = model_repo(args)
    if repo is not None:
        overrides["model_repo"] = repo
    for field in (
        "model_name",
        "host",
        "http_port",
        "grpc_port",
        "workers",
        "strict",
        "log_level",
    ):
        value = getattr(args, field, None)
        if value is not None:
            overrides[field] = value
    try:
        return Settings(**overrides)
    except ValidationError as exc:  # one line naming the setting, no traceback; exit status 1
        problems = "; ".join(
            str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "value_error"
            else f"SERVING_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise SystemExit(f"serving: error: {problems}") from None


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


log = logging.getLogger("serving.cli")


def fail(message: str) -> int:
    """One line on stderr, exit code 1: how every command reports a failure."""
    log.debug("failed", exc_info=True)
    print(f"serving: error: {message}", file=sys.stderr, flush=True)
    return 1


def cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_from(args)  # bad settings: one line and exit 1 (SystemExit)
    _setup_logging(settings.log_level)
    from serving.server import StartupError
    from serving.supervisor import run

    try:
        run(settings)
    except StartupError as exc:
        return fail(str(exc))
    return 0


def cmd_validate_repo(args: argparse.Namespace) -> int:
    from serving.repository.store import validate_repository

    directory = model_repo_or_default(args)
    problems = validate_repository(directory)
    for problem in problems:
        print(f"error: {problem}")
    if problems:
        print(f"{len(problems)} problem(s) in {directory}")
        return 1
    print(f"{directory}: OK")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if without_extra("serving export"):
        return 2
    from serving.repository.export import export_booster

    try:
        report = export_booster(
            args.booster,
            model_repo_or_default(args),
            args.model,
            version=args.version,
            tolerance=args.tolerance,
        )
    except ServingError as exc:
        return fail(exc.message)
    print(report.describe())
    if report.ok and args.profile:
        from serving.scoring.model import BatchError
        from serving.scoring.profiling import profile_version

        try:
            path, _ = profile_version(
                model_repo_or_default(args), args.model, args.profile, version=str(report.version)
            )
        except BatchError as exc:
            return fail(f"exported, but no profile: {exc}")
        print(f"wrote {path}")
    return 0 if report.ok else 1


def cmd_demo_models(args: argparse.Namespace) -> int:
    if without_extra("serving demo-models"):
        return 2
    from serving.repository.demo import build_demo_repository

    for line in build_demo_repository(model_repo_or_default(args)):
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="serving",
        description="Open Inference Protocol server for ONNX, XGBoost and LightGBM models, and its tools.",
        epilog="Run 'serving COMMAND --help' for a command's flags and an example.",
    )
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the inference server (REST and gRPC)",
        description="Run the inference server: serve a repository over REST and gRPC; with no flags, "
        "./model_repo on 0.0.0.0:8080 (REST) and :8081 (gRPC). Logs each model version it loaded "
        "(or why not) and the ports.",
    )
    _serve_flags(serve)
    serve.set_defaults(func=cmd_serve)

    validate = sub.add_parser(
        "validate-repo",
        help="check a model repository; exit 1 on any problem",
        description="Load every model version the way the server would and print every problem "
        "('error: <file>: <what>'); exit 1 if any, 0 and 'DIR: OK' otherwise.",
    )
    add_model_repo(validate, positional=True, help="the model repository to check (default ./model_repo)")
    validate.set_defaults(func=cmd_validate_repo)

    export = sub.add_parser(
        "export",
        help="convert a native XGBoost or LightGBM booster to an ONNX model version",
        description="Convert a native booster (XGBoost model.json/model.ubj, LightGBM model.txt) to "
        "ONNX as a new version of --model, with its config.yaml, and print the parity check on 512 "
        "random rows plus the fast-path guard's edge rows; above the tolerance nothing is written "
        "and it exits 1. From Python: serving.repository.export.export_booster(path, repo, name).",
    )
    export.add_argument("booster", type=Path, help="model.json or model.ubj (XGBoost), model.txt (LightGBM)")
    add_model_repo(export, help="repository to write into (default ./model_repo)")
    export.add_argument("--model", required=True, help="model name in the repository")
    export.add_argument("--version", type=int, help="version number (default: next free)")
    export.add_argument("--tolerance", type=float, default=1e-5, help="max abs difference allowed")
    export.add_argument(
        "--profile",
        metavar="TABLE",
        help="also write the new version's monitoring profile from this training table "
        "(Parquet or CSV with a list column 'input'; as 'serving profile --data')",
    )
    export.set_defaults(func=cmd_export)

    demo = sub.add_parser(
        "demo-models",
        help="(re)generate the demo models deterministically",
        description="Regenerate the demo repository from scikit-learn's bundled data; deterministic: "
        "the output is byte-for-byte the committed files.",
    )
    add_model_repo(demo, positional=True, help="where to write the models (default ./model_repo)")
    demo.set_defaults(func=cmd_demo_models)

    from serving.rollout.cli import add_rollout_parser

    add_rollout_parser(sub)
    from serving.scoring.cli import add_batch_parser

    add_batch_parser(sub)
    from serving.scoring.cli import add_profile_parser

    add_profile_parser(sub)
    from serving.scoring.cli import add_demo_data_parser

    add_demo_data_parser(sub)
    _add_examples(parser)
    return parser


def subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every (nested) command's parser by its path, e.g. ``"rollout start"``."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                path = f"{prefix}{name}"
                found[path] = child
                found.update(subcommands(child, path + " "))
    return found


def _add_examples(parser: argparse.ArgumentParser) -> None:
    for path, child in subcommands(parser).items():
        example = EXAMPLES.get(path)
        if example is not None:
            child.epilog = example if not child.epilog else f"{child.epilog}\n\n{example}"
            child.formatter_class = argparse.RawDescriptionHelpFormatter


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
