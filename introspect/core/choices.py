"""The choices of the projection primitive, as plain values (torch-free: command options use them,
and ``introspect deconv --help`` imports no torch). :mod:`introspect.core.deconvnet` owns their meaning."""

#: What is projected: the strongest activation of a map (``max``) or the whole map (``map``).
MODES = ("max", "map")
#: How it is projected: ``auto`` picks the fast ``chain`` walk when the layers allow it, else ``autograd``.
METHODS = ("auto", "chain", "autograd")

__all__ = ["MODES", "METHODS"]
