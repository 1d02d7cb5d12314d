"""Every setting, config.yaml key, metric, error class and CLI argument has a description, so the
generated reference pages (scripts/docs_reference.py) never show an empty cell. Fix a failure by
writing the docstring or help text in the code."""

from __future__ import annotations

from pydantic import BaseModel, Field

from tests.docs.sitegen import reference as ref


def test_every_setting_has_a_description() -> None:
    rows = ref.settings_rows()
    assert len(rows) > 30 and all(r.name.startswith("SERVING_") for r in rows)
    missing = [r.name for r in rows if not r.description.strip()]
    assert not missing, f"Settings fields without a docstring: {missing}"


def test_every_config_key_has_a_description() -> None:
    rows = ref.config_rows()
    names = {r.name for r in rows}
    assert {"platform", "inputs[].datatype", "batching.max_queue_delay_us", "traffic.weights"} <= names
    missing = [r.name for r in rows if not r.description.strip()]
    assert not missing, f"config.yaml keys without a docstring (serving/modelconfig.py): {missing}"


def test_every_metric_has_help() -> None:
    rows = ref.metric_rows()
    assert "serving_requests_total" in {r.name for r in rows}
    missing = [r.name for r in rows if not r.description.strip()]
    assert not missing, f"collectors without help text (serving/observability/metrics.py): {missing}"


def test_every_error_class_has_a_docstring() -> None:
    classes = ref.error_classes()
    assert {c.__name__ for c in classes} >= {"ServingError", "InvalidInput", "ModelNotFound", "Overloaded"}
    missing = [c.__name__ for c in classes if not (c.__dict__.get("__doc__") or "").strip()]
    assert not missing, f"error classes without a docstring (serving/errors.py): {missing}"


def test_every_cli_argument_has_help() -> None:
    commands = ref.cli_commands()
    assert {"serve", "validate-repo", "export", "batch", "rollout auto"} <= set(commands)
    missing = [
        f"serving {path} {'/'.join(action.option_strings) or action.dest}"
        for path, (parser, _) in commands.items()
        for action in ref.cli_arguments(parser)
        if not (action.help or "").strip()
    ]
    assert not missing, f"CLI arguments without help: {missing}"
    assert all(summary for path, (_, summary) in commands.items() if path), "a command without help"


def test_the_docstring_reader_sees_what_is_missing() -> None:
    """The checks above can fail: a field without a docstring reads as no description."""

    class Example(BaseModel):
        documented: int = Field(1, ge=0)
        """Said here."""
        bare: str = "x"

    docs = ref.attribute_docs(Example)
    assert docs == {"documented": "Said here."}
    assert ref.constraints_text(Example.model_fields["documented"]) == "≥ 0"
    assert ref.default_text(Example.model_fields["bare"]) == "`x`"
