"""Reference tables of the documentation site, generated from the code at build time.

Each ``*_rows`` function reads one source of truth (the Settings class, the config.yaml model,
the collectors, the error hierarchy, the argparse tree, the OpenAPI document and the inference
messages of serving/protocol/rest/schema.py) and returns plain
rows; each ``*_markdown`` renders them. Tables from shipped files (dashboard, alert rules,
benchmark results) are in docs_artifacts.py. ``scripts/docs_site.py`` (the MkDocs hook)
puts the Markdown where a page says ``<!-- generated: NAME -->``. Tests read the rows to require
a description for every setting, config key, metric, error class and CLI flag
(tests/docs/test_reference.py).
"""

from __future__ import annotations

import argparse
import ast
import inspect
import itertools
import re
import textwrap
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

if typing.TYPE_CHECKING:
    from serving.errors import ServingError

ROOT = Path(__file__).resolve().parent.parent


# -- text helpers ---------------------------------------------------------------------------
def one_line(text: str | None) -> str:
    """A docstring as one Markdown table cell: rST ``code`` to `code`, pipes outside code escaped
    (the table extension leaves pipes inside code spans alone, and shows a backslash there)."""
    text = " ".join((text or "").split()).replace("``", "`")
    parts = text.split("`")
    return "`".join(p if i % 2 else p.replace("|", "\\|") for i, p in enumerate(parts))


def code(text: str) -> str:
    return f"`{text}`" if text else ""


def anchor(name: str) -> str:
    """An id to link a row to (``settings.md#serving_http_port``); MkDocs checks such links."""
    return f'<span id="{name.lower()}"></span>'


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def attribute_docs(cls: type) -> dict[str, str]:
    """Field name -> the string literal right under its annotation (the attribute docstring
    convention Settings and the config models follow), from the class and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass.__module__.split(".")[0] in ("builtins", "pydantic", "pydantic_settings"):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body if isinstance(tree.body[0], ast.ClassDef) else []
        for node, following in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[node.target.id] = inspect.cleandoc(following.value.value)
    return docs


def type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    text = str(annotation)
    return re.sub(r"\b(?:[a-z_][a-z0-9_]*\.)+", "", text).replace("NoneType", "None")


def plain(value: Any) -> Any:
    """A default as the user writes it (YAML / env): models as mappings, tuples as lists."""
    if isinstance(value, BaseModel):
        return {k: plain(v) for k, v in value.model_dump(exclude_defaults=True).items()}
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return "unset"
    text = yaml.safe_dump(plain(value), default_flow_style=True, width=1000).strip()
    return code(text.removesuffix("...").strip())


def constraints_text(field: FieldInfo) -> str:
    words = {
        "ge": "≥",
        "gt": ">",
        "le": "≤",
        "lt": "<",
        "min_length": "min length",
        "max_length": "max length",
    }
    found = []
    for meta in field.metadata:
        for attr, word in words.items():
            value = getattr(meta, attr, None)
            if value is not None:
                found.append(f"{word} {value}")
        pattern = getattr(meta, "pattern", None)
        if pattern:
            found.append(f"matches {code(pattern)}")
    return ", ".join(found)


# -- settings ---------------------------------------------------------------------------------
@dataclass
class Row:
    name: str
    kind: str
    default: str
    constraints: str
    description: str
    extra: str = ""


def settings_rows() -> list[Row]:
    from serving.cli import build_parser, subcommands
    from serving.settings import Settings

    docs = attribute_docs(Settings)
    flags = {
        action.dest: action.option_strings[0]
        for action in subcommands(build_parser())["serve"]._actions
        if action.option_strings and action.dest != "help"
    }
    return [
        Row(
            "SERVING_" + name.upper(),
            type_name(field.annotation),
            default_text(field),
            constraints_text(field),
            docs.get(name, ""),
            flags.get(name, ""),
        )
        for name, field in Settings.model_fields.items()
    ]


def settings_markdown() -> str:
    rows = settings_rows()
    return table(
        ["variable", "type", "default", "constraints", "`serve` flag", "description"],
        [
            [
                anchor(r.name) + code(r.name),
                code(r.kind),
                r.default,
                r.constraints,
                code(r.extra),
                one_line(r.description),
            ]
            for r in rows
        ],
    )


# -- config.yaml ------------------------------------------------------------------------------
def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The config model a field holds (directly or as ``tuple[Model, ...]``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def config_rows(model: type[BaseModel] | None = None, prefix: str = "") -> list[Row]:
    if model is None:
        from serving.modelconfig import ModelConfig

        model = ModelConfig
    docs = attribute_docs(model)
    rows: list[Row] = []
    for name, field in model.model_fields.items():
        nested = _model_of(field.annotation)
        key = prefix + name
        description = docs.get(name, "")
        if nested is not None and not description:
            description = inspect.cleandoc(nested.__doc__ or "")
        is_list = nested is not None and typing.get_origin(field.annotation) is tuple
        kind = f"list of {nested.__name__}" if is_list and nested else type_name(field.annotation)
        rows.append(Row(key, kind, default_text(field), constraints_text(field), description))
        if nested is not None:
            rows += config_rows(nested, key + ("[]." if is_list else "."))
    return rows


def config_markdown() -> str:
    return table(
        ["key", "type", "default", "constraints", "description"],
        [
            [code(r.name), code(r.kind), r.default, r.constraints, one_line(r.description)]
            for r in config_rows()
        ],
    )


# -- metrics ----------------------------------------------------------------------------------
def metric_rows() -> list[Row]:
    from prometheus_client import CollectorRegistry

    from serving.observability.metrics import Metrics

    metrics = Metrics(CollectorRegistry(), multiprocess_dir="")
    rows = []
    for collector in vars(metrics).values():
        kind = getattr(collector, "_type", None)
        if kind not in ("counter", "gauge", "histogram", "summary"):
            continue
        # prometheus-client keeps a collector's label names and help on the parent (its
        # public collect() shows labels only once a child exists).
        name = collector._name + ("_total" if kind == "counter" else "")
        buckets = ""
        if kind == "histogram":
            bounds = collector._kwargs.get("buckets") or ()
            buckets = ", ".join(format(b, "f").rstrip("0").rstrip(".") for b in bounds)
        rows.append(
            Row(
                name, kind, "", "", collector._documentation, ", ".join(collector._labelnames) + "|" + buckets
            )
        )
    return rows


def metrics_markdown() -> str:
    out = []
    for r in metric_rows():
        labels, buckets = r.extra.split("|")
        out.append(
            [
                anchor(r.name) + code(r.name),
                r.kind,
                ", ".join(code(x) for x in labels.split(", ") if x),
                one_line(r.description),
                buckets,
            ]
        )
    return table(["metric", "type", "labels", "help", "buckets (histograms)"], out)


# -- errors -----------------------------------------------------------------------------------
def error_classes() -> list[type[ServingError]]:
    from serving.errors import ServingError

    def walk(cls: type[ServingError]) -> Iterator[type[ServingError]]:
        yield cls
        for sub in cls.__subclasses__():
            if sub.__module__ == "serving.errors":
                yield from walk(sub)

    return list(walk(ServingError))


def error_markdown() -> str:
    rows = []
    for cls in error_classes():
        base = cls.__mro__[1].__name__ if cls.__mro__[1] is not Exception else ""
        doc = cls.__dict__.get("__doc__") or ""
        rows.append(
            [code(cls.__name__), code(base), str(cls.http_status), code(cls.grpc_code), one_line(doc)]
        )
    return table(["class", "subclass of", "HTTP status", "gRPC code", "when"], rows)


# -- command line -----------------------------------------------------------------------------
def cli_commands() -> dict[str, tuple[argparse.ArgumentParser, str]]:
    """Every command path (``""`` is ``serving`` itself) -> (its parser, its one-line help)."""
    from serving.cli import build_parser

    root = build_parser()
    found: dict[str, tuple[argparse.ArgumentParser, str]] = {"": (root, root.description or "")}

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {a.dest: a.help or "" for a in action._choices_actions}
                for name, child in action.choices.items():
                    path = f"{prefix}{name}"
                    found[path] = (child, helps.get(name, ""))
                    walk(child, path + " ")

    walk(root, "")
    return found


def cli_arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a for a in parser._actions if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
    ]


def cli_markdown() -> str:
    out = []
    for path, (parser, summary) in cli_commands().items():
        if not path:
            continue
        out.append(f"## `serving {path}`\n")
        out.append(one_line(parser.description or summary) + "\n")
        usage = parser.format_usage().removeprefix("usage: ").strip()
        out.append("```text\n" + usage + "\n```\n")
        rows = []
        for action in cli_arguments(parser):
            name = ", ".join(action.option_strings) or str(action.metavar or action.dest)
            default = action.default
            shown = "" if default in (None, argparse.SUPPRESS, False) else code(str(default))
            choices = ", ".join(code(str(c)) for c in action.choices) if action.choices else ""
            rows.append([code(name), shown, choices, one_line(action.help)])
        if rows:
            out.append(table(["argument", "default", "choices", "description"], rows))
        if parser.epilog:
            out.append("```text\n" + parser.epilog.strip() + "\n```\n")
    return "\n".join(out)


# -- REST API ---------------------------------------------------------------------------------
def openapi() -> dict[str, Any]:
    """The OpenAPI document of the FastAPI routes (everything but the raw-ASGI inference
    handlers), from an app built the way the server builds it, on an empty repository."""
    import tempfile
    import warnings

    from serving.server import build
    from serving.settings import Settings

    with tempfile.TemporaryDirectory() as empty, warnings.catch_warnings():
        # The repository index answers GET and POST from one function, so FastAPI names both
        # operations alike and warns; the paths and methods it lists are still right.
        warnings.filterwarnings("ignore", "Duplicate Operation ID", UserWarning)
        # status_page: list the status page's routes too (off by default on the public port)
        parts = build(Settings(model_repo=Path(empty), status_page=True))
        try:
            document: dict[str, Any] = parts.rest_app._fallback.openapi()
            return document
        finally:
            parts.executor.shutdown()


def rest_markdown() -> str:
    """Every route of the server: the FastAPI ones from their OpenAPI document, the raw-ASGI
    inference routes and the JSON messages from serving/protocol/rest/schema.py. Nothing is read
    from outside this checkout; tests/protocol/rest/test_schema.py compares the messages with
    KServe's OIP spec where that reference file is at hand."""
    from serving.protocol.rest.schema import INFERENCE_ROUTES, MESSAGES

    out = ["## Inference routes\n"]
    out.append(
        "Infer and predict are answered in the HTTP protocol (`serving/protocol/rest/direct.py`) or, "
        "with `SERVING_REST_INFER_PATH=asgi`, by the raw-ASGI handler (`serving/protocol/rest/app.py`, "
        "`InferenceApp`), which also serves explain; both run `serving/protocol/rest/inference.py`. "
        "Their messages are described in `serving/protocol/rest/schema.py`.\n"
    )
    rows = [
        [r.method, code(r.path), one_line(r.summary), code(r.request), code(r.response)]
        for r in INFERENCE_ROUTES
    ]
    out.append(table(["method", "path", "operation", "request body", "answer (200)"], rows))
    out.append("## Other routes (OpenAPI)\n")
    rows = []
    for path, methods in openapi()["paths"].items():
        for method, op in methods.items():
            summary = op.get("summary", "").replace("<Lambda>", "Index")
            rows.append([method.upper(), code(path), one_line(summary)])
    out.append(table(["method", "path", "operation"], rows))
    out.append("## Messages\n")
    for name, schema in MESSAGES.items():
        props = schema.get("properties") or {}
        required = set(schema.get("required", []))
        fields = [
            [
                code(prop),
                code(_schema_type(body)),
                "yes" if prop in required else "",
                one_line(body.get("description")),
            ]
            for prop, body in props.items()
        ]
        out.append(
            f"### `{name}`\n\n{one_line(schema.get('description'))}\n\n"
            + table(["field", "type", "required", "description"], fields)
        )
    return "\n".join(out)


def _schema_type(body: dict[str, Any]) -> str:
    if "$ref" in body:
        return str(body["$ref"]).rsplit("/", 1)[-1]
    if "enum" in body:
        return ", ".join(str(v) for v in body["enum"])
    if body.get("type") == "array" and body.get("items"):
        return f"array of {_schema_type(body['items'])}"
    if "anyOf" in body:
        return " or ".join(_schema_type(b) for b in body["anyOf"])
    return str(body.get("type", "any"))
