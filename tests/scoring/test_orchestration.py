"""The scheduled-job examples: the CronJob is a valid Kubernetes object running our image with
arguments `serving batch` accepts; the Airflow DAG parses and its task has the same shape.

Airflow is not installed (hundreds of MB and its own dependency pins): the DAG file is read
with Python's ``ast``, its operator and arguments checked, and the arguments parsed by our CLI.
"""

from __future__ import annotations

import ast
from typing import Any

import yaml

from serving.cli import build_parser
from serving.cliflags import model_repo
from tests.deploy.k8s_schemas import load_kustomization, validate_object
from tests.server_process import ROOT

BATCH_MANIFESTS = ROOT / "manifests" / "batch"
DAG = ROOT / "examples" / "airflow" / "serving_batch_dag.py"


def parse_batch_args(command: list[str], args: list[str]) -> Any:
    assert command[:2] == ["serving", "batch"], command
    parsed = build_parser().parse_args([*command[1:], *args])
    assert parsed.command == "batch"
    return parsed


def test_cronjob_is_valid_and_runs_serving_batch() -> None:
    objects = load_kustomization(BATCH_MANIFESTS)
    assert [o["kind"] for o in objects] == ["CronJob"]
    cronjob = objects[0]
    assert validate_object(cronjob) == []
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"  # two nightly runs never race for one output
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    container = pod["containers"][0]
    image = container["image"].split(":")[0]
    runtime = yaml.safe_load((ROOT / "manifests" / "runtime" / "servingruntime.yaml").read_text())
    assert image == runtime["spec"]["containers"][0]["image"].split(":")[0]  # our image
    parsed = parse_batch_args(container["command"], container["args"])
    repo = model_repo(parsed)
    assert parsed.model == "cancer-xgb" and repo is not None and repo.as_posix() == "/mnt/models"
    assert len(parsed.columns) == 30  # cancer-xgb's input width
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/mnt/models", "/tmp", "/data"} <= mounts
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def _call(node: ast.AST, name: str) -> ast.Call:
    for found in ast.walk(node):
        if isinstance(found, ast.Call) and getattr(found.func, "id", None) == name:
            return found
    raise AssertionError(f"no {name}(...) call in {DAG}")


def test_airflow_dag_parses_and_its_task_runs_serving_batch() -> None:
    tree = ast.parse(DAG.read_text(), filename=str(DAG))
    imports = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert ("airflow.providers.cncf.kubernetes.operators.pod", "KubernetesPodOperator") in imports
    assert ("airflow", "DAG") in imports
    dag = _call(tree, "DAG")
    dag_args = {k.arg: k.value for k in dag.keywords}
    assert ast.literal_eval(dag_args["dag_id"]) == "serving_batch_scoring"
    assert ast.literal_eval(dag_args["catchup"]) is False
    task = _call(tree, "KubernetesPodOperator")
    kwargs = {k.arg: k.value for k in task.keywords}
    assert {"task_id", "image", "cmds", "arguments", "volumes", "volume_mounts"} <= set(kwargs)
    assert ast.literal_eval(kwargs["image"]).split(":")[0] == "serving"
    parsed = parse_batch_args(ast.literal_eval(kwargs["cmds"]), ast.literal_eval(kwargs["arguments"]))
    cronjob = load_kustomization(BATCH_MANIFESTS)[0]
    container = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    same = parse_batch_args(container["command"], container["args"])
    for field in ("model", "columns", "keep", "on_bad_rows", "overwrite"):
        assert getattr(parsed, field) == getattr(same, field), field
    assert model_repo(parsed) == model_repo(same)  # --model-repo, or its alias --repo
