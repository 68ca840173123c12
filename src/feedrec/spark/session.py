"""The Spark session feedrec's jobs run in: local mode on one machine, or a cluster's master URL.

Python workers run this interpreter (``spark.pyspark.python``), so executors import the same
feedrec and libraries as the driver; the session time zone is UTC (event times are UTC
instants); Arrow carries every frame between the JVM and Python.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from feedrec.config import BackendsConfig

DEFAULTS: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "100000",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    # Local mode: a few partitions per core, not 200 (the shuffle default is for clusters).
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.adaptive.enabled": "true",
    "spark.driver.memory": "4g",
}


def spark_session(master: str = "local[*]", conf: dict[str, str] | None = None) -> Any:
    """The process's Spark session (created once; later calls return it)."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # local mode stays on loopback
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    try:
        from pyspark.sql import SparkSession
    except ImportError:  # pragma: no cover (a dependency of feedrec's scale-out extra)
        raise ImportError("engine spark needs pyspark: pip install 'feedrec[scale]'") from None
    builder = SparkSession.builder.master(master).appName("feedrec")
    for key, value in {**DEFAULTS, "spark.pyspark.python": sys.executable, **(conf or {})}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def session_for(backends: BackendsConfig) -> Any:
    return spark_session(backends.spark_master, backends.spark_conf)
