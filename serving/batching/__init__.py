"""Dynamic batching: a Predictor stage that wraps a runtime (see ``batcher``)."""

from serving.batching.batcher import DynamicBatcher, predictor_factory

__all__ = ["DynamicBatcher", "predictor_factory"]
