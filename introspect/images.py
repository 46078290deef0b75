"""Reading images and folders of images, and turning them into model inputs.

:func:`read_image` opens any JPEG, PNG, WebP, BMP or TIFF file as an 8-bit RGB ``PIL.Image`` (alpha is
composited over white, 16-bit and float data are scaled to 8 bits, EXIF orientation is applied), and
reports every way a file can be unusable as one :class:`~introspect.errors.IntrospectError` line.

:class:`Preprocess` is the classic ImageNet evaluation transform -- resize the shorter side, center
crop, scale to ``[0, 1]``, normalize per channel -- computed exactly as ``torchvision.transforms``
(``Resize(H)``, ``CenterCrop((H, W))``, ``ToTensor()``, ``Normalize(mean, std)``) does, plus the
:class:`Geometry` that maps boxes between the original image and the model input, so a receptive field
found in the input can be drawn on the photo the user gave.
"""
from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from introspect.errors import IntrospectError, IntrospectWarning, os_error_text
from introspect.output import MANIFEST, is_output_folder

#: Largest image (width x height) :func:`read_image` accepts; Pillow's own default limit.
MAX_PIXELS = 89_478_485

#: File name extensions (lower case) that :class:`ImageFolderDataset` picks up.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")

from introspect.imagenet import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402  (re-exported)

#: Mean and std for one-channel models: the averages of the ImageNet RGB statistics.
GRAY_MEAN = (0.449,)
GRAY_STD = (0.226,)

Box = tuple[float, float, float, float]

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


# --------------------------------------------------------------------------------------------------
# reading one image
# --------------------------------------------------------------------------------------------------
def _one_line(error: BaseException) -> str:
    """``error`` as a short single line, for embedding in an :class:`IntrospectError` message."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _check_file(path: Path) -> None:
    """Raise :class:`IntrospectError` unless ``path`` is a non-empty regular file."""
    if not path.exists():
        raise IntrospectError(f"image file not found: {path}; check the path")
    if path.is_dir():
        raise IntrospectError(f"{path} is a folder, not an image file; pass an image file")
    if path.stat().st_size == 0:
        raise IntrospectError(f"image file {path} is empty (0 bytes); pass a valid image file")


def _too_large(path: Path, pixels: int | None, error: BaseException | None = None) -> IntrospectError:
    """The error for an image over the pixel limit (``pixels`` None: read from Pillow's ``error``)."""
    found = re.search(r"\((\d+) pixels\)", str(error)) if pixels is None else None
    pixels = int(found.group(1)) if found else pixels
    count = f"{pixels} pixels" if pixels else "more pixels than allowed"
    return IntrospectError(
        f"image {path} is too large: {count} > limit of {MAX_PIXELS}; resize it first"
    )


def _open_and_load(path: Path) -> Image.Image:
    """Open and fully decode ``path``, turning every failure into an :class:`IntrospectError`."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise _too_large(path, None, error) from None
        except PermissionError:
            raise IntrospectError(
                f"cannot read image file {path}: permission denied; check the file's permissions"
            ) from None
        except Exception as error:  # noqa: BLE001 - UnidentifiedImageError or any decoder failure
            raise IntrospectError(
                f"{path} is not an image Pillow can read ({_one_line(error)}); "
                "pass a JPEG, PNG, WebP, BMP or TIFF file"
            ) from None
        with img:
            pixels = img.size[0] * img.size[1]
            if pixels > MAX_PIXELS:
                raise _too_large(path, pixels)
            try:
                img.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning):
                raise _too_large(path, pixels) from None
            except Exception as error:  # noqa: BLE001 - truncated or corrupt data
                raise IntrospectError(
                    f"image file {path} is corrupt or truncated ({_one_line(error)}); "
                    "re-export or replace it"
                ) from None
            return img


def _scale_to_uint8(values: np.ndarray, mode: str) -> np.ndarray:
    """Scale one channel of 16-bit, 32-bit or float data to ``uint8`` (see :func:`read_image`)."""
    values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode in _SIXTEEN_BIT or (mode == "I" and lo >= 0 and hi <= 65535):
        scaled = values / 257.0
    elif mode == "F" and lo >= 0 and hi <= 1:
        scaled = values * 255.0
    elif mode == "F" and lo >= 0 and hi <= 255:
        scaled = values
    else:
        scaled = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a ``PIL.Image`` of any mode to 8-bit ``"RGB"``.

    Transparent pixels are composited over white (modes with alpha, palette or RGB/L images with a
    ``transparency`` key). 16-bit modes (``I;16*``) are divided by 257; ``I`` (32-bit) is divided by
    257 when its values lie in ``0..65535`` and min-max scaled otherwise; ``F`` is multiplied by 255
    when in ``[0, 1]``, kept when in ``[0, 255]``, min-max scaled otherwise. ``1``, ``L``, ``P``,
    ``CMYK``, ``YCbCr`` use Pillow's own conversion.

    Args:
        img (PIL.Image.Image): the image.

    Returns:
        PIL.Image.Image: an ``"RGB"`` image of the same size (``img`` itself when already RGB).

    Raises:
        IntrospectError: Pillow cannot convert the mode (e.g. ``LAB``).

    Example:
        >>> to_rgb(Image.new("LA", (2, 2), (0, 0))).getpixel((0, 0))
        (255, 255, 255)
    """
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in _ALPHA_MODES or (mode in ("P", "L", "RGB") and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode in _SIXTEEN_BIT or mode in ("I", "F", "I;16S"):
        return Image.fromarray(_scale_to_uint8(np.asarray(img), mode), "L").convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as error:
        raise IntrospectError(
            f"cannot convert an image of color mode {mode} to RGB ({_one_line(error)}); "
            "save it as an RGB or grayscale image first"
        ) from None


def read_image(path: str | os.PathLike) -> Image.Image:
    """Read an image file as an 8-bit RGB ``PIL.Image``, upright.

    Reads JPEG, PNG, WebP, BMP and TIFF (anything Pillow opens) of any color mode; see
    :func:`to_rgb` for how modes become RGB (alpha over white, 16-bit divided by 257). The EXIF
    orientation tag is applied, so the image is the way a viewer shows it. The whole file is decoded
    here, so truncated files fail now rather than later.

    Args:
        path (str | os.PathLike): the image file.

    Returns:
        PIL.Image.Image: mode ``"RGB"``, size ``(width, height)`` after EXIF rotation.

    Raises:
        IntrospectError: the file is missing, a folder, empty, unreadable, not an image, corrupt or
            truncated, or larger than :data:`MAX_PIXELS` pixels (a possible decompression bomb).

    Example:
        >>> img = read_image("cat.jpg")
        >>> img.mode, img.size
        ('RGB', (640, 480))
    """
    path = Path(path)
    try:
        _check_file(path)
    except OSError as error:  # a folder without permission to enter, a name too long, ...
        what, fix = os_error_text(error)
        raise IntrospectError(f"cannot read image file {path}: {what}; {fix or 'check the path'}") from None
    img = _open_and_load(path)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make the pixels unreadable
        pass
    return to_rgb(img)


# --------------------------------------------------------------------------------------------------
# geometry of the preprocessing
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Geometry:
    """How :class:`Preprocess` maps an image onto the model input: a resize, then a crop.

    Coordinates are continuous pixel-edge coordinates: pixel ``(i, j)`` covers ``[i, i+1) x
    [j, j+1)``, and a box ``(y0, x0, y1, x1)`` is end-exclusive, so the whole image is
    ``(0, 0, H, W)``. A point ``(y, x)`` of the original image lands at
    ``(y * scale[0] - offset[0], x * scale[1] - offset[1])`` in the model input. Negative offsets mean
    the input was padded with zeros (the crop is larger than the resized image).

    Attributes:
        image_size (tuple[int, int]): original ``(width, height)``, PIL order.
        resized_size (tuple[int, int]): ``(width, height)`` after the resize, PIL order.
        input_hw (tuple[int, int]): ``(H, W)`` of the model input.
        scale (tuple[float, float]): ``(sy, sx)`` = resized size / original size, per axis.
        offset (tuple[int, int]): ``(top, left)`` of the crop in resized-image pixels.
    """

    image_size: tuple[int, int]
    resized_size: tuple[int, int]
    input_hw: tuple[int, int]
    scale: tuple[float, float]
    offset: tuple[int, int]

    @staticmethod
    def round_out(box: Box) -> tuple[int, int, int, int]:
        """Round a float box outward to whole pixels: floor the starts, ceil the ends.

        Example:
            >>> Geometry.round_out((1.2, 0.5, 3.1, 4.0))
            (1, 0, 4, 4)
        """
        y0, x0, y1, x1 = box
        return (math.floor(y0 + 1e-9), math.floor(x0 + 1e-9),
                math.ceil(y1 - 1e-9), math.ceil(x1 - 1e-9))

    @staticmethod
    def _finish(box: Box, bounds_hw: tuple[int, int], outward: bool, clip: bool):
        if outward:
            box = Geometry.round_out(box)
        if clip:
            h, w = bounds_hw
            y0, x0, y1, x1 = box
            box = (min(max(y0, 0), h), min(max(x0, 0), w), min(max(y1, 0), h), min(max(x1, 0), w))
        return tuple(box)

    def to_input(self, box: Box, *, outward: bool = False, clip: bool = False) -> tuple:
        """Map a box ``(y0, x0, y1, x1)`` from original-image pixels to model-input pixels.

        Args:
            box (tuple of 4 floats): end-exclusive box in original-image coordinates.
            outward (bool): round to ``int`` with :meth:`round_out` (default ``False``: exact floats).
            clip (bool): clip to the input ``(0, 0, H, W)`` after mapping (default ``False``).

        Returns:
            tuple: the box in model-input coordinates (floats, or ints when ``outward``).

        Example:
            >>> g = IMAGENET.geometry((448, 448))
            >>> g.to_input((0, 0, 448, 448))
            (0.0, 0.0, 224.0, 224.0)
        """
        sy, sx = self.scale
        top, left = self.offset
        y0, x0, y1, x1 = box
        mapped = (y0 * sy - top, x0 * sx - left, y1 * sy - top, x1 * sx - left)
        return self._finish(mapped, self.input_hw, outward, clip)

    def to_image(self, box: Box, *, outward: bool = False, clip: bool = False) -> tuple:
        """Map a box ``(y0, x0, y1, x1)`` from model-input pixels back to original-image pixels.

        The exact inverse of :meth:`to_input` (``to_image(to_input(b)) == b`` up to float error).

        Args:
            box (tuple of 4 floats): end-exclusive box in model-input coordinates, e.g. a receptive
                field.
            outward (bool): round to ``int`` with :meth:`round_out` (default ``False``: exact floats).
            clip (bool): clip to the image ``(0, 0, height, width)`` (default ``False``).

        Returns:
            tuple: the box in original-image coordinates (floats, or ints when ``outward``).

        Example:
            >>> g = IMAGENET.geometry((448, 448))
            >>> g.to_image((10, 20, 30, 40))
            (20.0, 40.0, 60.0, 80.0)
        """
        sy, sx = self.scale
        top, left = self.offset
        y0, x0, y1, x1 = box
        mapped = ((y0 + top) / sy, (x0 + left) / sx, (y1 + top) / sy, (x1 + left) / sx)
        width, height = self.image_size
        return self._finish(mapped, (height, width), outward, clip)


def _resized_size(image_size: tuple[int, int], short_side: int) -> tuple[int, int]:
    """``(width, height)`` after resizing the shorter side to ``short_side``, as torchvision does."""
    w, h = image_size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = short_side, int(short_side * long / short)
    return (new_short, new_long) if w <= h else (new_long, new_short)


def _crop_start(size: int, crop: int) -> int:
    """Start of a centered crop of length ``crop`` in ``size`` pixels (torchvision's rounding)."""
    if crop > size:
        return -((crop - size) // 2)
    return int(round((size - crop) / 2.0))


# --------------------------------------------------------------------------------------------------
# preprocessing
# --------------------------------------------------------------------------------------------------
def _positive_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and bool(value > 0)


#: torchvision's interpolation names -> PIL filters (as ``torchvision.transforms.functional`` maps them).
_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
             "nearest": Image.Resampling.NEAREST, "nearest-exact": Image.Resampling.NEAREST,
             "lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side, center-crop, scale to ``[0, 1]`` and normalize per channel.

    Equal to ``torchvision.transforms.Compose([Resize(resize), CenterCrop((H, W)), ToTensor(),
    Normalize(mean, std)])`` on an RGB (or, for ``C == 1``, ``L``) image, bit for bit.

    Attributes:
        input_size (tuple[int, int, int]): ``(C, H, W)`` of the model input; ``C`` is 1 or 3.
        mean (tuple[float, ...]): per-channel mean, ``C`` values.
        std (tuple[float, ...]): per-channel standard deviation, ``C`` positive values.
        resize (int | None): the shorter side is resized to this before the crop. Default ``None``:
            ``max(H, W)`` (that is ``H`` for square inputs: resize to 224, crop 224).
        interpolation (str): the resize filter as torchvision names it: ``"bilinear"`` (default),
            ``"bicubic"``, ``"nearest"``, ``"lanczos"``, ``"box"``, ``"hamming"``. With a pretrained
            model's values this equals its ``weights.transforms()`` on a PIL image.

    Example:
        >>> pre = Preprocess((3, 224, 224), IMAGENET_MEAN, IMAGENET_STD)
        >>> pre(read_image("cat.jpg")).shape
        torch.Size([3, 224, 224])
    """

    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    resize: int | None = None
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        size, mean, std = tuple(self.input_size), tuple(self.mean), tuple(self.std)
        if len(size) != 3 or not all(_positive_int(v) for v in size) or size[0] not in (1, 3):
            raise IntrospectError(
                f"input size must be (C, H, W) with C = 1 or 3, got {self.input_size}; "
                "pass e.g. (3, 224, 224)"
            )
        if len(mean) != size[0] or len(std) != size[0]:
            raise IntrospectError(
                f"mean {mean} and std {std} need {size[0]} values each for {size[0]} channels; "
                "give one value per input channel"
            )
        if not all(float(s) > 0 for s in std):
            raise IntrospectError(f"std values must be positive, got {std}; fix the std")
        if self.resize is not None and not _positive_int(self.resize):
            raise IntrospectError(
                f"resize must be a positive integer or None, got {self.resize!r}; e.g. 256"
            )
        if str(self.interpolation).lower() not in _RESAMPLE:
            raise IntrospectError(f"unknown interpolation {self.interpolation!r}; use one of {', '.join(_RESAMPLE)}")
        object.__setattr__(self, "interpolation", str(self.interpolation).lower())
        object.__setattr__(self, "input_size", tuple(int(v) for v in size))
        object.__setattr__(self, "mean", tuple(float(v) for v in mean))
        object.__setattr__(self, "std", tuple(float(v) for v in std))

    @property
    def grayscale(self) -> bool:
        """``True`` when the model takes one channel (images are converted to ``L``)."""
        return self.input_size[0] == 1

    @property
    def short_side(self) -> int:
        """The length the shorter image side is resized to."""
        return self.resize if self.resize is not None else max(self.input_size[1:])

    @classmethod
    def from_meta(cls, meta: Any) -> Preprocess:
        """Build a :class:`Preprocess` from model metadata.

        Args:
            meta: an object (e.g. ``ModelMeta``) or mapping with ``input_size``, ``mean``, ``std``
                and optionally ``resize``; ``None`` or missing values fall back to ``(3, 224, 224)``
                and the ImageNet statistics (:data:`GRAY_MEAN` / :data:`GRAY_STD` for one channel).

        Returns:
            Preprocess: the matching preprocessing.

        Example:
            >>> Preprocess.from_meta(None) == IMAGENET
            True
        """
        def get(name: str) -> Any:
            if isinstance(meta, Mapping):
                return meta.get(name)
            return getattr(meta, name, None)

        size = tuple(get("input_size") or (3, 224, 224))
        gray = len(size) == 3 and size[0] == 1
        mean = get("mean") or (GRAY_MEAN if gray else IMAGENET_MEAN)
        std = get("std") or (GRAY_STD if gray else IMAGENET_STD)
        return cls(size, tuple(mean), tuple(std), get("resize"), get("interpolation") or "bilinear")

    def geometry(self, image_size: tuple[int, int]) -> Geometry:
        """The resize-and-crop mapping for an image of ``image_size = (width, height)`` (PIL order).

        Example:
            >>> IMAGENET.geometry((640, 480)).offset
            (0, 37)
        """
        w, h = (int(v) for v in image_size)
        if w <= 0 or h <= 0:
            raise IntrospectError(f"image size must be positive, got {image_size}; check the image")
        new_w, new_h = _resized_size((w, h), self.short_side)
        _, height, width = self.input_size
        return Geometry(
            image_size=(w, h),
            resized_size=(new_w, new_h),
            input_hw=(height, width),
            scale=(new_h / h, new_w / w),
            offset=(_crop_start(new_h, height), _crop_start(new_w, width)),
        )

    def __call__(self, img: Image.Image) -> torch.Tensor:
        """Turn a ``PIL.Image`` into a normalized ``float32`` tensor of shape ``(C, H, W)``.

        Example:
            >>> IMAGENET(Image.new("RGB", (300, 200))).shape
            torch.Size([3, 224, 224])
        """
        img = to_rgb(img)
        if self.grayscale:
            img = img.convert("L")
        geo = self.geometry(img.size)
        img = img.resize(geo.resized_size, _RESAMPLE[self.interpolation])
        (top, left), (height, width) = geo.offset, geo.input_hw
        img = img.crop((left, top, left + width, top + height))
        x = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True))
        x = x.view(height, width, -1).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)
        return x.sub_(mean).div_(std)

    def denormalize(self, t: torch.Tensor) -> torch.Tensor:
        """Undo the normalization: ``t * std + mean``, clamped to ``[0, 1]`` for display.

        Args:
            t (torch.Tensor): ``(C, H, W)`` or ``(N, C, H, W)`` normalized input(s).

        Returns:
            torch.Tensor: same shape, ``float32``, values in ``[0, 1]``.

        Example:
            >>> IMAGENET.denormalize(torch.zeros(3, 2, 2))[:, 0, 0]
            tensor([0.4850, 0.4560, 0.4060])
        """
        channels = self.input_size[0]
        if t.dim() not in (3, 4) or t.shape[-3] != channels:
            raise IntrospectError(
                f"denormalize needs a (C, H, W) or (N, C, H, W) tensor with C = {channels}, "
                f"got shape {tuple(t.shape)}; pass the model input"
            )
        mean = torch.tensor(self.mean, dtype=torch.float32, device=t.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=t.device).view(-1, 1, 1)
        return (t.detach().to(torch.float32) * std + mean).clamp(0.0, 1.0)


#: The ImageNet evaluation preprocessing: 3 x 224 x 224, resize 224, ImageNet mean and std.
IMAGENET = Preprocess((3, 224, 224), IMAGENET_MEAN, IMAGENET_STD)


def preprocess_image(path: str | os.PathLike, preprocess: Preprocess = IMAGENET) -> torch.Tensor:
    """Read and preprocess one image as a batch of one (``introspect.load_image(path, model)`` is
    this with the model's preprocessing).

    Args:
        path (str | os.PathLike): the image file.
        preprocess (Preprocess): the model's preprocessing (default :data:`IMAGENET`).

    Returns:
        torch.Tensor: ``(1, C, H, W)`` ``float32``.

    Raises:
        IntrospectError: the file cannot be read (see :func:`read_image`).

    Example:
        >>> preprocess_image("cat.jpg").shape
        torch.Size([1, 3, 224, 224])
    """
    return preprocess(read_image(path)).unsqueeze(0)


def load_images(paths: Sequence[str | os.PathLike], preprocess: Preprocess = IMAGENET) -> torch.Tensor:
    """Read and preprocess several images into one batch, in the given order.

    Args:
        paths (sequence of paths): image files; at least one.
        preprocess (Preprocess): the model's preprocessing (default :data:`IMAGENET`).

    Returns:
        torch.Tensor: ``(N, C, H, W)`` ``float32``.

    Example:
        >>> load_images(["a.png", "b.jpg"]).shape
        torch.Size([2, 3, 224, 224])
    """
    paths = list(paths)
    if not paths:
        raise IntrospectError("no image files given; pass at least one image")
    return torch.stack([preprocess(read_image(p)) for p in paths])


# --------------------------------------------------------------------------------------------------
# folders
# --------------------------------------------------------------------------------------------------
def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _readable_folder(path: Path) -> bool:
    """False for a folder introspect wrote (it carries a manifest): its images are a command's output,
    never input. Says so in one warning."""
    if not is_output_folder(path):
        return True
    warnings.warn(f"skipping {path}: it holds introspect output ({MANIFEST}), not input images",
                  IntrospectWarning, stacklevel=3)
    return False


def find_images(folder: str | os.PathLike) -> list[Path]:
    """Every image file under ``folder``, recursively, sorted; hidden files and folders skipped, and
    folders introspect wrote (they carry a manifest, see :func:`introspect.output.is_output_folder`).

    Args:
        folder (str | os.PathLike): the folder to search.

    Returns:
        list[Path]: files whose extension (any case) is in :data:`IMAGE_EXTENSIONS`, sorted by their
        path relative to ``folder``.

    Example:
        >>> find_images("photos")
        [PosixPath('photos/a.jpg'), PosixPath('photos/trip/b.PNG')]
    """
    folder = Path(folder)
    found: list[Path] = []
    for here, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and _readable_folder(Path(here) / d))
        found.extend(Path(here) / f for f in files if _is_image_name(f))
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


def _check_folder(root: Path) -> None:
    if not root.exists():
        raise IntrospectError(f"image folder not found: {root}; check the path")
    if not root.is_dir():
        raise IntrospectError(f"{root} is a file, not a folder; pass a folder of images")


class ImageFolderDataset(Dataset):
    """A dataset over a folder of images: flat, or one subfolder per class (torchvision layout).

    Layout: when ``root`` holds no image files directly and has (non-hidden) subfolders, each
    subfolder is a class (sorted names, label = index, images found recursively inside; like
    ``torchvision.datasets.ImageFolder``; a subfolder without images still counts as a class, so
    labels match torchvision's). Otherwise the folder is flat: every image under ``root``
    (recursively) with label ``-1``. Hidden files and folders are skipped, and so are folders
    introspect wrote (an ``--out`` inside the data set is never read as data); order is sorted and
    deterministic.

    Args:
        root (str | os.PathLike): the folder.
        preprocess (Preprocess): the model's preprocessing (default :data:`IMAGENET`).

    Attributes:
        root (Path): the folder.
        paths (list[Path]): the image files, in dataset order.
        classes (list[str]): class names (subfolder names); empty for a flat folder.
        targets (list[int]): label of each image (``-1`` for a flat folder).

    Raises:
        IntrospectError: the folder is missing, not a folder, or holds no images; ``ds[i]`` raises it
            (naming the file) when image ``i`` is unreadable.

    Example:
        >>> ds = ImageFolderDataset("val/")
        >>> x, label = ds[0]
        >>> x.shape, ds.classes[label]
        (torch.Size([3, 224, 224]), 'cat')
    """

    def __init__(self, root: str | os.PathLike, preprocess: Preprocess = IMAGENET) -> None:
        self.root = Path(root)
        self.preprocess = preprocess
        _check_folder(self.root)
        entries = sorted(p for p in self.root.iterdir() if not p.name.startswith("."))
        direct = [p for p in entries if p.is_file() and _is_image_name(p.name)]
        subdirs = [p for p in entries if p.is_dir() and _readable_folder(p)]
        self.classes: list[str] = [] if direct or not subdirs else [d.name for d in subdirs]
        if self.classes:
            pairs = [(p, i) for i, d in enumerate(subdirs) for p in find_images(d)]
        else:
            pairs = [(p, -1) for p in find_images(self.root)]
        if not pairs:
            raise IntrospectError(
                f"no images found in {self.root} (looked for {', '.join(IMAGE_EXTENSIONS)}); "
                "add images or pick another folder"
            )
        self.paths: list[Path] = [p for p, _ in pairs]
        self.targets: list[int] = [t for _, t in pairs]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """``(tensor (C, H, W), label)`` of image ``index``; label is ``-1`` for a flat folder."""
        return self.preprocess(read_image(self.paths[index])), self.targets[index]

    def __repr__(self) -> str:
        kind = f"{len(self.classes)} classes" if self.classes else "flat"
        return f"ImageFolderDataset({str(self.root)!r}, {len(self)} images, {kind})"



def image_batch(images) -> torch.Tensor:
    """``images`` as a detached ``(N, C, H, W)`` batch with N >= 1 (a ``(C, H, W)`` image becomes a batch
    of one); anything else is one :class:`IntrospectError` line naming the fix.

    Example:
        >>> image_batch(torch.zeros(3, 32, 32)).shape
        torch.Size([1, 3, 32, 32])
    """
    if not isinstance(images, torch.Tensor):
        raise IntrospectError(f"images must be a tensor (N x C x H x W), got {type(images).__name__}; "
                              "load them with introspect.load_image")
    x = images.detach()
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[0] == 0:
        raise IntrospectError(f"images must be N x C x H x W (or C x H x W) with N >= 1, got shape "
                              f"{tuple(images.shape)}; pass a batch of images")
    return x


# --------------------------------------------------------------------------------------------------
# a data set in batches
# --------------------------------------------------------------------------------------------------
_ITEMS_HINT = ("it must give image tensors (C x H x W, preprocessed for the model) or (image, label) pairs, "
               "e.g. ImageFolderDataset(root, Preprocess.from_meta(meta_of(model)))")


def _image_of(item: Any) -> torch.Tensor:
    """The image of one data-set item: the item itself, or the first element of an ``(image, label)`` pair."""
    image = item[0] if isinstance(item, (tuple, list)) else item
    if not isinstance(image, torch.Tensor):
        raise IntrospectError(f"the data set gives {type(image).__name__} items; {_ITEMS_HINT}")
    return image


def _collate(items: list) -> torch.Tensor:
    """A ``DataLoader`` batch of images, checked (a module-level function: worker processes pickle it)."""
    from torch.utils.data import default_collate

    images = [_image_of(item) for item in items]
    for image in images[1:]:
        if image.shape != images[0].shape:
            raise IntrospectError(f"the data set gives images of different sizes, {tuple(images[0].shape)} and "
                                  f"{tuple(image.shape)}; preprocess them to one size")
    return default_collate(images)


def dataset_size(dataset: Any, limit: int | None = None) -> int:
    """How many images of ``dataset`` a pass reads: ``len(dataset)``, at most ``limit``.

    ``dataset`` is a map-style data set (items are image tensors or ``(image, label)`` pairs, e.g.
    :class:`ImageFolderDataset`) or an ``(N, C, H, W)`` tensor; anything else is one
    :class:`IntrospectError` line naming the fix.

    Example:
        >>> dataset_size(torch.zeros(10, 3, 32, 32), limit=4)
        4
    """
    if isinstance(dataset, torch.Tensor) and dataset.dim() != 4:
        raise IntrospectError(f"a data set given as a tensor must be N x C x H x W, got shape "
                              f"{tuple(dataset.shape)}; to pass one image as an (N, C, H, W) batch add a batch "
                              "dimension: x[None]")
    try:
        n = len(dataset)
    except TypeError:
        raise IntrospectError("the data set has no length; pass a map-style data set (e.g. ImageFolderDataset) "
                              "or an (N, C, H, W) tensor") from None
    return min(n, limit) if limit is not None else n


def dataset_image(dataset: Any, index: int) -> torch.Tensor:
    """Image ``index`` of ``dataset`` (a data set or an ``(N, C, H, W)`` tensor) as a ``(C, H, W)`` tensor."""
    return _image_of(dataset[index])


def dataset_batches(dataset: Any, batch_size: int, *, workers: int = 0, limit: int | None = None,
                    indices: Sequence[int] | torch.Tensor | None = None) -> Iterator[torch.Tensor]:
    """The images of ``dataset`` in ``(B, C, H, W)`` batches, in data-set order.

    One way for every method that streams a data set: a tensor is sliced (no copy of the whole), any
    other map-style data set is read through a ``DataLoader`` (``workers`` processes; labels dropped).
    Items that are not image tensors, or images of different sizes in one batch, are one
    :class:`IntrospectError` line, also when raised in a worker process; the workers are stopped as
    soon as the iteration ends or is abandoned.

    Args:
        dataset: a map-style data set giving image tensors or ``(image, label)`` pairs (e.g.
            :class:`ImageFolderDataset`, which skips hidden files and folders introspect wrote), or an
            ``(N, C, H, W)`` tensor.
        batch_size (int): images per batch (the last one may be smaller).
        workers (int): ``DataLoader`` worker processes (default 0: read in this process).
        limit (int | None): only the first ``limit`` images.
        indices (sequence of int | Tensor | None): only these images, in this order (``limit`` is
            then ignored).

    Example:
        >>> [x.shape[0] for x in dataset_batches(torch.zeros(10, 3, 8, 8), 4)]
        [4, 4, 2]
    """
    if isinstance(dataset, torch.Tensor):
        yield from _tensor_batches(dataset, batch_size, limit, indices)
        return
    from torch.utils.data import DataLoader, Subset

    if indices is not None:
        dataset = Subset(dataset, [int(i) for i in indices])
    elif limit is not None and limit < len(dataset):
        dataset = Subset(dataset, range(limit))
    batches = iter(DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                              collate_fn=_collate))
    try:
        yield from batches
    except IntrospectError as exc:  # from a worker process: keep the one line, drop its traceback
        last = (str(exc).strip().splitlines() or [""])[-1]
        if "IntrospectError: " in last:
            raise IntrospectError(last.split("IntrospectError: ", 1)[1]) from None
        raise
    finally:  # stop the worker processes now, not whenever the traceback happens to be collected
        shutdown = getattr(batches, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


def _tensor_batches(data: torch.Tensor, batch_size: int, limit: int | None,
                    indices: Sequence[int] | torch.Tensor | None) -> Iterator[torch.Tensor]:
    if indices is None:
        data = data[:limit] if limit is not None else data
        for first in range(0, len(data), batch_size):
            yield data[first:first + batch_size]
        return
    index = torch.as_tensor(indices, dtype=torch.int64)
    for first in range(0, len(index), batch_size):
        yield data[index[first:first + batch_size].to(data.device)]


__all__ = [
    "MAX_PIXELS", "IMAGE_EXTENSIONS", "IMAGENET_MEAN", "IMAGENET_STD", "GRAY_MEAN", "GRAY_STD", "Box", "to_rgb",
    "read_image", "Geometry", "Preprocess", "IMAGENET", "preprocess_image", "load_images", "find_images",
    "ImageFolderDataset", "image_batch", "dataset_size", "dataset_image", "dataset_batches"
]
