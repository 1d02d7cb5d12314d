"""A low-latency Open Inference Protocol (v2) server for ONNX models and native XGBoost and
LightGBM boosters (serving/platforms.py lists every platform)."""

__version__ = "0.1.0"
