"""Feature generalization: per-layer linear probes on a new data set (Tables 4-7) (in progress)."""
from __future__ import annotations
