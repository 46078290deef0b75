"""Plain values shared by the method and the command (torch-free: ``introspect top --help``
imports no torch)."""

#: Seconds the processes of a distributed ``top`` run wait for each other.
DEFAULT_TIMEOUT = 1800.0

__all__ = ["DEFAULT_TIMEOUT"]
