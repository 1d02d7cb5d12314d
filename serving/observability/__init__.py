"""Observability: statistics (Triton's statistics extension), beside metrics and tracing."""
