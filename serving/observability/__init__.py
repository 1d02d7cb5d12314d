"""Observability beyond the metrics: statistics (Triton's statistics extension), OpenTelemetry
tracing and payload logging.

Tracing and payload logging are off by default and imported only when switched on
(``serving.server.build``), so a server without them never loads the OpenTelemetry SDK.
"""
