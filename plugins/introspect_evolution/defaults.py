"""Plain values shared by the method and the command (torch-free: ``introspect evolution --help``
imports no torch)."""

#: Feature maps followed per layer when none are given.
DEFAULT_MAPS = 8

__all__ = ["DEFAULT_MAPS"]
