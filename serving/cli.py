"""The ``serving`` command: serve, validate-repo, export, demo-models.

Flags override ``SERVING_*`` environment variables, which override defaults; the CLI builds
one Settings object and passes it down.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from serving.settings import Settings


def _serve_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-repo", type=Path, help="model repository (default ./model_repo, env SERVING_MODEL_REPO)"
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
    for field in (
        "model_repo",
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


def cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    _setup_logging(settings.log_level)
    from serving.server import run

    run(settings)
    return 0


def cmd_validate_repo(args: argparse.Namespace) -> int:
    from serving.repository import validate_repository

    problems = validate_repository(args.directory)
    for problem in problems:
        print(f"error: {problem}")
    if problems:
        print(f"{len(problems)} problem(s) in {args.directory}")
        return 1
    print(f"{args.directory}: OK")
    return 0


def _without_extra(command: str) -> bool:
    """Print the one line naming the missing extra (exit status 2), or False when installed."""
    from serving.extras import missing_extra

    problem = missing_extra(command)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
    return problem is not None


def cmd_export(args: argparse.Namespace) -> int:
    if _without_extra("serving export"):
        return 2
    from serving.errors import ServingError
    from serving.export import export_booster

    try:
        report = export_booster(
            args.booster, args.repo, args.model, version=args.version, tolerance=args.tolerance
        )
    except ServingError as exc:  # a refusal (LightGBM parity, categorical splits) or a bad name
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(report.describe())
    return 0 if report.ok else 1


def cmd_demo_models(args: argparse.Namespace) -> int:
    if _without_extra("serving demo-models"):
        return 2
    from serving.demo import build_demo_repository

    for line in build_demo_repository(args.directory):
        print(line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="serving", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the inference server (REST and gRPC)")
    _serve_flags(serve)
    serve.set_defaults(func=cmd_serve)

    validate = sub.add_parser("validate-repo", help="check a model repository; exit 1 on any problem")
    validate.add_argument("directory", type=Path)
    validate.set_defaults(func=cmd_validate_repo)

    export = sub.add_parser(
        "export", help="convert a native XGBoost or LightGBM booster to an ONNX model version"
    )
    export.add_argument("booster", type=Path, help="model.json or model.ubj (XGBoost), model.txt (LightGBM)")
    export.add_argument("--repo", type=Path, default=Path("model_repo"), help="repository to write into")
    export.add_argument("--model", required=True, help="model name in the repository")
    export.add_argument("--version", type=int, help="version number (default: next free)")
    export.add_argument("--tolerance", type=float, default=1e-5, help="max abs difference allowed")
    export.set_defaults(func=cmd_export)

    demo = sub.add_parser("demo-models", help="(re)generate the demo models deterministically")
    demo.add_argument("directory", type=Path, nargs="?", default=Path("model_repo"))
    demo.set_defaults(func=cmd_demo_models)

    from serving.rollout.cli import add_rollout_parser

    add_rollout_parser(sub)

    from serving.batch.cli import add_batch_parser

    add_batch_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
