"""Batch scoring: tables through the same repository loader, validation and runtimes as the server.

``plan`` maps a table's columns to the model's inputs and its outputs to columns (checked
before any scoring); ``model`` loads one version with the repository's loader; ``local``
streams Parquet/CSV through a pool of runtime calls into one atomically written Parquet
file; ``spark`` runs the same per-batch function inside PySpark's ``mapInArrow``.
pyarrow (and pyspark for the Spark engine) come from the ``batch`` extra; the server never
imports this package.
"""
