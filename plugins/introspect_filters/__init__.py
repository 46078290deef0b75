"""First-layer filters, dead filters and aliasing (the paper's Fig. 6): ``introspect filters`` (in progress)."""
from __future__ import annotations
