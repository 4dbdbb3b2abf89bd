"""Exporting a run's trace: JSON lines, or Parquet in row groups (``maker trace export``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO

from maker.errors import UserError
from maker.store import RunRecord, Store
from maker.trace._records import step_records

__all__ = ["export_jsonl", "export_parquet"]


def export_jsonl(st: Store, record: RunRecord, out: TextIO, *, samples: bool = False) -> int:
    """Write one JSON line per step; returns how many."""
    n = 0
    for rec in step_records(st, record, record.first_step, None, samples=samples):
        out.write(json.dumps(rec, separators=(",", ":")))
        out.write("\n")
        n += 1
    return n


_PARQUET_BATCH = 65536


def export_parquet(st: Store, record: RunRecord, path: str | Path) -> int:
    """Write the step records as a Parquet file, in row groups, never holding the whole run."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError("Parquet export needs pyarrow: pip install 'maker[parquet]' (or use --format jsonl)") from None
    schema = pa.schema(
        [
            ("run_id", pa.string()),
            ("step", pa.int64()),
            ("microstep", pa.string()),
            ("tag", pa.string()),
            ("digest", pa.string()),
            ("input", pa.string()),
            ("answer", pa.string()),
            ("votes", pa.list_(pa.int64())),
            ("rounds", pa.int64()),
            ("samples", pa.int64()),
            ("tokens", pa.int64()),
            ("red_flags", pa.string()),
            ("agent", pa.string()),
            ("correct", pa.bool_()),
            ("t_start", pa.float64()),
            ("dur_s", pa.float64()),
            ("speculation", pa.string()),
            ("usage", pa.string()),
        ]
    )
    json_cols = {"answer", "red_flags", "speculation", "usage"}  # nested objects of any shape stay JSON text
    n = 0
    with pq.ParquetWriter(str(path), schema) as writer:
        batch: dict[str, list[Any]] = {f.name: [] for f in schema}
        for rec in step_records(st, record, record.first_step, None):
            for name, col in batch.items():
                v = rec[name]
                col.append(json.dumps(v) if name in json_cols and v is not None else v)
            n += 1
            if len(batch["step"]) >= _PARQUET_BATCH:
                writer.write_table(pa.table(batch, schema=schema))
                batch = {f.name: [] for f in schema}
        if batch["step"] or n == 0:
            writer.write_table(pa.table(batch, schema=schema))
    return n
