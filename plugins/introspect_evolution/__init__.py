"""Feature evolution during training (the paper's Fig. 4): ``introspect evolution`` (in progress)."""
from __future__ import annotations
