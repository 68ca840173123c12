"""``SparkEventStore``: the events as a Parquet dataset partitioned by event date, read and written
with Spark; the ``EventStore`` interface the embedded store implements, for logs that outgrow one
machine (the path can be any file system Spark and the driver both reach: a shared volume, HDFS).

Layout under ``<root>/events_by_date/``: ``date=YYYY-MM-DD/seq-<append>-<n>.parquet`` files, each
row with its append's ``_seq``, and ``_commits.jsonl``, one line per committed append
(``{"seq", "rows"}``, fsync'ed). An append is a Spark job: its new events (ids not stored yet, by
an anti-join against the stored ids, which Spark distributes) are written to a staging folder,
moved into the date folders, and only then committed by its line. Readers read committed seqs
only, so an append that dies midway is invisible, and its files are removed by the next writer
(the seq is reused). Items and users are small and stay one Parquet file each (``SideTables``).

This store is the offline world's: bulk loads and Spark jobs over the whole log. A server
appends to the embedded store (an append here is a Spark job: seconds, not milliseconds).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from feedrec.data.store import AppendResult, EventStore, SideTables, event_columns
from feedrec.schemas import EVENT_SCHEMA
from feedrec.spark.session import spark_session


class SparkEventStore(SideTables, EventStore):
    def __init__(self, root: Path | str, *, master: str = "local[*]", conf: dict[str, str] | None = None) -> None:
        self.root = Path(root)
        self.dataset = self.root / "events_by_date"
        self.dataset.mkdir(parents=True, exist_ok=True)
        self._commits = self.dataset / "_commits.jsonl"
        self.spark = spark_session(master, conf)

    # -- the commit log --------------------------------------------------------------------------
    def _committed(self) -> list[dict[str, int]]:
        if not self._commits.exists():
            return []
        lines = self._commits.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def position(self) -> int:
        committed = self._committed()
        return committed[-1]["seq"] if committed else 0

    def count(self) -> int:
        return sum(c["rows"] for c in self._committed())

    def _files(self) -> list[str]:
        return sorted(str(p) for p in self.dataset.glob("date=*/seq-*.parquet"))

    def _drop_uncommitted(self, last: int) -> None:
        """Files of appends that never committed (seq past the last line): a crashed writer's."""
        for path in self.dataset.glob("date=*/seq-*.parquet"):
            if int(path.name.split("-")[1]) > last:
                path.unlink()
        shutil.rmtree(self.dataset / "_staging", ignore_errors=True)

    # -- reads -----------------------------------------------------------------------------------
    def frame(self, *, upto: int | None = None) -> Any:
        """The committed events as a Spark DataFrame (EVENT_SCHEMA columns and ``_seq``)."""
        from pyspark.sql import functions as F

        last = self.position() if upto is None else upto
        files = self._files()
        if not files or last == 0:
            return self.spark.createDataFrame(
                EVENT_SCHEMA.empty_table().append_column("_seq", pa.array([], pa.int64()))
            ).limit(0)
        df = self.spark.read.option("basePath", str(self.dataset)).parquet(*files)
        return df.filter(F.col("_seq") <= last).select(*EVENT_SCHEMA.names, "_seq")

    def _collect(self, df: Any, columns: Sequence[str]) -> pa.Table:
        table = df.select(*columns).toArrow()
        return table.cast(pa.schema([EVENT_SCHEMA.field(c) for c in columns]))

    def scan(
        self,
        *,
        columns: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        users: Sequence[str] | None = None,
    ) -> pa.Table:
        from pyspark.sql import functions as F

        cols = event_columns(columns)
        df = self.frame()
        if types is not None:
            df = df.filter(F.col("type").isin([str(t) for t in types]))
        if users is not None:
            df = df.filter(F.col("user_id").isin([str(u) for u in users]))
        if start is not None:  # the date partitions prune the files as well
            df = df.filter((F.col("timestamp") >= F.lit(start)) & (F.col("date") >= F.lit(start.date())))
        if end is not None:
            df = df.filter((F.col("timestamp") < F.lit(end)) & (F.col("date") <= F.lit(end.date())))
        return self._collect(df.orderBy("timestamp", "event_id"), cols)

    def read_since(self, position: int, *, skip: Collection[int] = ()) -> tuple[pa.Table, int]:
        from pyspark.sql import functions as F

        last = self.position()
        if last <= position:
            return EVENT_SCHEMA.empty_table(), max(last, position)
        df = self.frame(upto=last).filter(F.col("_seq") > position)
        mine = [int(x) for x in skip if x > position]
        if mine:
            df = df.filter(~F.col("_seq").isin(mine))
        return self._collect(df.orderBy("_seq", "timestamp"), EVENT_SCHEMA.names), last

    def stats(self) -> dict[str, object]:
        from pyspark.sql import functions as F

        df = self.frame()
        by_type = {r["type"]: r["count"] for r in df.groupBy("type").count().orderBy("type").collect()}
        row = df.agg(
            F.count("*").alias("events"),
            F.countDistinct("user_id").alias("users"),
            F.countDistinct("item_id").alias("items"),
            F.min("timestamp").alias("first"),
            F.max("timestamp").alias("last"),
        ).collect()[0]
        return {
            "events": row["events"],
            "users": row["users"],
            "items": row["items"],
            "first": str(row["first"]) if row["first"] else None,
            "last": str(row["last"]) if row["last"] else None,
            "by_type": by_type,
        }

    # -- writes ----------------------------------------------------------------------------------
    def append(self, events: pa.Table) -> AppendResult:
        from pyspark.sql import functions as F

        events = events.select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA)
        if events.num_rows == 0:
            return AppendResult(0, 0)
        with self._lock():
            last = self.position()
            self._drop_uncommitted(last)
            seq = last + 1
            incoming = self.spark.createDataFrame(events).withColumn("_n", F.monotonically_increasing_id())
            # A repeated id inside the batch: the first row wins; an id stored already: not again.
            first = incoming.groupBy("event_id").agg(F.min("_n").alias("_n"))
            unique = incoming.join(first, ["event_id", "_n"], "left_semi")
            if last:
                unique = unique.join(self.frame(upto=last).select("event_id"), "event_id", "left_anti")
            new = unique.drop("_n").withColumn("_seq", F.lit(seq).cast("long"))
            new = new.withColumn("date", F.to_date("timestamp")).orderBy("timestamp").cache()
            stored_ids = [r["event_id"] for r in new.select("event_id").collect()]
            if not stored_ids:
                new.unpersist()
                return AppendResult(0, events.num_rows)
            staging = self.dataset / "_staging" / f"{seq}-{uuid.uuid4().hex[:8]}"
            new.write.partitionBy("date").parquet(str(staging))
            new.unpersist()
            for n, path in enumerate(sorted(staging.glob("date=*/*.parquet"))):
                target = self.dataset / path.parent.name / f"seq-{seq:012d}-{n:05d}.parquet"
                target.parent.mkdir(exist_ok=True)
                os.replace(path, target)
            shutil.rmtree(staging, ignore_errors=True)
            with self._commits.open("a") as fh:  # the commit: readers see the append from here on
                fh.write(json.dumps({"seq": seq, "rows": len(stored_ids)}) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        return AppendResult(
            stored=len(stored_ids),
            already_stored=events.num_rows - len(stored_ids),
            stored_ids=tuple(stored_ids),
            position=seq,
        )
