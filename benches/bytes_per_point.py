#!/usr/bin/env python3
"""Bytes per point of a store's metrics table, against pyarrow's default Parquet writer.

    python benches/bytes_per_point.py --store DIR

Reads the metrics table's current files (the Delta snapshot, listed by the
`deltalake` package), counts rows and sums file sizes (forkline bytes/point),
then writes the same rows, same columns, with `pyarrow.parquet.write_table`
and its default settings to a temporary file (pyarrow bytes/point).
"""

import argparse
import os
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    args = ap.parse_args()
    files = DeltaTable(os.path.join(os.path.abspath(args.store), "metrics")).file_uris()
    files = [f[len("file://") :] if f.startswith("file://") else f for f in files]
    ours = sum(os.path.getsize(f) for f in files)
    table = pa.concat_tables(pq.read_table(f) for f in files)
    rows = table.num_rows
    if rows == 0:
        raise SystemExit("the metrics table is empty")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "metrics.parquet")
        pq.write_table(table, path)
        theirs = os.path.getsize(path)
    print(f"metrics table: {len(files)} files, {rows:,} points, columns {', '.join(table.column_names)}")
    print(f"forkline: {ours:,} bytes, {ours / rows:.3f} bytes/point")
    print(f"pyarrow write_table defaults: {theirs:,} bytes, {theirs / rows:.3f} bytes/point")
    print(f"pyarrow / forkline: {theirs / ours:.2f}x")


if __name__ == "__main__":
    main()
