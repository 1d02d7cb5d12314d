"""Which predictor a loaded version gets: the assembly's choice between calling the runtime
directly (on the pool or inline) and the dynamic batcher, from the version's config."""

from __future__ import annotations

from concurrent.futures import Executor

from serving.observability.metrics import Metrics
from serving.predict.batching import DynamicBatcher
from serving.predict.predictor import Predictor, ThreadedPredictor
from serving.repository.store import ModelVersion, PredictorFactory
from serving.runtimes.base import Runtime


def predictor_factory(
    executor: Executor, metrics: Metrics | None, inline_predict_us: float = 0.0
) -> PredictorFactory:
    """The repository's ``predictor_factory``: a DynamicBatcher for versions whose config
    enables batching, else a ThreadedPredictor (inline below ``inline_predict_us``); both on
    the shared ``executor``."""

    def make(entry: ModelVersion, runtime: Runtime) -> Predictor:
        batching = entry.config.batching
        if not batching.enabled:
            return ThreadedPredictor(
                runtime,
                executor,
                metrics=metrics,
                model=entry.model,
                version=entry.version,
                inline_budget_us=inline_predict_us,
            )
        return DynamicBatcher(
            runtime,
            executor,
            max_batch_size=batching.max_batch_size or entry.config.max_batch_size,
            max_queue_delay_us=batching.max_queue_delay_us,
            preferred_batch_sizes=batching.preferred_batch_sizes,
            max_queue_size=batching.max_queue_size,
            max_inflight_batches=batching.max_inflight_batches,
            metrics=metrics,
            model=entry.model,
            version=entry.version,
        )

    return make
