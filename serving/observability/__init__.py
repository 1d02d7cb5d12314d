"""Observability beyond the metrics: OpenTelemetry tracing and payload logging.

Both are off by default and imported only when switched on (``serving.server.build``), so a
server without them never loads the OpenTelemetry SDK.
"""
