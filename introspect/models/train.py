"""Where the training recipe used to live: its names, re-exported from :mod:`introspect.training`.

New code imports :mod:`introspect.training` (or ``introspect.train`` for a whole run).
"""
from __future__ import annotations

from introspect.training import *  # noqa: F403
from introspect.training import __all__  # noqa: F401
