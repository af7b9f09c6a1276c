"""Shared helpers for the benchmark scripts: where the data is, how to read it."""

from __future__ import annotations

import gzip
import json
import os
import resource
from pathlib import Path


def data_dir() -> Path:
    """The shared data folder (``$CRYSK_DATA`` or ``../shared/data`` beside the repo)."""
    env = os.environ.get("CRYSK_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def read_jsonl(name: str, limit: int | None = None) -> list[dict]:
    """Read up to ``limit`` records of a gzipped JSON-lines file of the data folder."""
    records = []
    with gzip.open(data_dir() / name, "rt", encoding="utf-8") as fh:
        for line in fh:
            records.append(json.loads(line))
            if limit is not None and len(records) >= limit:
                break
    return records


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
