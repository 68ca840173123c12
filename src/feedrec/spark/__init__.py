"""Spark for the offline world: the event store, the point-in-time feature build and batch scoring
as Spark jobs, from the same feature definitions and code as the embedded engine (DuckDB/polars).

Chosen by config (``backends.engine: spark``, ``backends.spark_master``); ``local[*]`` runs on one
machine, a master URL on a cluster. PySpark is imported only by what uses it.
"""
