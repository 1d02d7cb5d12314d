"""``Settings.stage_metrics=model`` (Metrics(stage_versions=False)): the stage series of all
of a model's versions share one child labelled ``version="all"``, which shrinks /metrics for
servers with hundreds of versions, while Triton's statistics stay per version."""

from __future__ import annotations

from serving.observability.metrics import ALL_VERSIONS, Metrics


def _serve(metrics: Metrics, models: int, versions: int) -> None:
    for m in range(models):
        for v in range(1, versions + 1):
            metrics.stage(f"model-{m}", str(v)).served(0.0001, 1, 0.00002)
            metrics.observe_request(f"model-{m}", str(v), "stable", "rest", "2xx", 0.0003)


def test_stage_series_per_model_share_one_child_and_keep_statistics() -> None:
    metrics = Metrics(stage_versions=False)
    first, second = metrics.stage("m", "1"), metrics.stage("m", "2")
    assert first.compute is second.compute and first.stats is not second.stats
    first.served(0.0, 1, 0.001)
    second.served(0.0, 1, 0.002)
    text = metrics.exposition().decode()
    assert f'serving_compute_duration_seconds_count{{model="m",version="{ALL_VERSIONS}"}} 2.0' in text
    assert 'serving_compute_duration_seconds_count{model="m",version="1"}' not in text
    # Triton's statistics still tell the versions apart
    assert metrics.statistics.snapshot("m", "1")["execution_count"] == 1
    assert metrics.statistics.snapshot("m", "2")["inference_stats"]["compute_infer"]["ns"] == 2_000_000


def test_per_model_stage_series_shrink_the_scrape_of_300_versions() -> None:
    per_version, per_model = Metrics(), Metrics(stage_versions=False)
    for metrics in (per_version, per_model):
        _serve(metrics, models=150, versions=2)
    full, trimmed = len(per_version.exposition()), len(per_model.exposition())
    assert trimmed < 0.8 * full, (full, trimmed)
