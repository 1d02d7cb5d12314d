"""A low-latency Open Inference Protocol (v2) server for ONNX and native XGBoost models."""

__version__ = "0.1.0"
