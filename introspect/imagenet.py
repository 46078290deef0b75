"""ImageNet's per-channel input statistics (RGB, for images scaled to [0, 1]); torch-free, so the
architecture registry can use them without importing torch. :mod:`introspect.images` re-exports them."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD"]
