"""Plain values shared by the method and the command (torch-free: ``introspect filters --help``
imports no torch)."""

#: A filter whose norm is below this fraction of the layer's median filter norm is dead ("negligible norm").
NORM_FRACTION = 0.05
#: Default high-frequency cutoff in cycles per pixel (half of the pixel Nyquist frequency 1/2).
HF_CUTOFF = 0.25

__all__ = ["NORM_FRACTION", "HF_CUTOFF"]
