"""Airflow DAG: nightly batch scoring with `serving batch` in a Kubernetes pod (docs/batch.md).

Needs Airflow 2.7+ with the cncf.kubernetes provider. The task runs our image with the
`batch` extra; the model repository and the tables are PersistentVolumeClaims. The output
appears only when the run succeeds, so a downstream task can rely on it.
tests/scoring/test_orchestration.py checks this file parses and that its arguments are
accepted by `serving batch` (Airflow itself is not installed in CI).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow import DAG
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes.client import models as k8s

volumes = [
    k8s.V1Volume(
        name="models",
        persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name="model-repo", read_only=True),
    ),
    k8s.V1Volume(
        name="data", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name="scoring-data")
    ),
    k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource()),
]
mounts = [
    k8s.V1VolumeMount(name="models", mount_path="/mnt/models", read_only=True),
    k8s.V1VolumeMount(name="data", mount_path="/data"),
    k8s.V1VolumeMount(name="tmp", mount_path="/tmp"),
]

with DAG(
    dag_id="serving_batch_scoring",
    schedule="30 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=10)},
    tags=["serving", "batch"],
) as dag:
    score = KubernetesPodOperator(
        task_id="score_cancer_xgb",
        name="serving-batch-cancer-xgb",
        image="serving:0.1.0-batch",
        cmds=["serving", "batch"],
        arguments=[
            "cancer-xgb",
            "--model-repo=/mnt/models",
            "--input=/data/in/cancer/{{ ds }}",
            "--output=/data/out/cancer-scores/{{ ds }}.parquet",
            "--keep=id",
            "--columns=f0,f1,f2,f3,f4,f5,f6,f7,f8,f9,f10,f11,f12,f13,f14,f15,f16,f17,f18,f19,f20,f21,f22,f23,f24,"
            "f25,f26,f27,f28,f29",
            "--on-bad-rows=reject",
            "--rejects=/data/out/cancer-rejects/{{ ds }}.parquet",
            "--overwrite",
            "--progress-interval=60",
        ],
        volumes=volumes,
        volume_mounts=mounts,
        container_resources=k8s.V1ResourceRequirements(requests={"cpu": "2", "memory": "2Gi"}),
        security_context=k8s.V1PodSecurityContext(run_as_non_root=True, run_as_user=10001),
        get_logs=True,
        on_finish_action="delete_pod",
    )
