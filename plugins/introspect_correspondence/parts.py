"""Part boxes: reading a parts file, one box per image and part, checked, in model-input pixels.

A parts specification maps a part name to one of

* one box for every image: ``[y0, x0, y1, x1]`` or ``{"y0": .., "x0": .., "y1": .., "x1": ..}``;
* a list of boxes, one per image, in the order of the images;
* a mapping image name -> box (the image's file name, e.g. ``"dog3.jpg"``, or the path as given).

Boxes are end-exclusive pixel boxes (the rows ``y0 .. y1-1`` and columns ``x0 .. x1-1``), as
everywhere in introspect. For a tensor of preprocessed images they are in model-input pixels; for
image files they are in each file's own pixels and are mapped through the preprocessing (resize and
center crop, :meth:`introspect.images.Preprocess.geometry`), rounded outward to whole pixels.
"""
from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from introspect.plugin import IntrospectError

Box = tuple[int, int, int, int]
BOX_KEYS = ("y0", "x0", "y1", "x1")
RESERVED = "random"


def load_parts(path: str | os.PathLike) -> dict[str, Any]:
    """Read a parts file: JSON, or YAML (``.yaml``/``.yml``) when PyYAML is installed.

    Args:
        path (str | os.PathLike): the file; its top level maps part name -> box specification (see
            the module docstring).

    Returns:
        dict: part name -> specification, in file order.

    Raises:
        IntrospectError: the file is missing, not valid JSON/YAML, not a mapping, or YAML without PyYAML.

    Example:
        >>> load_parts("parts.json")
        {'right_eye': [[6, 3, 10, 8], [7, 3, 11, 8]], 'nose': [9, 8, 15, 13]}
    """
    path = Path(path)
    if not path.is_file():
        raise IntrospectError(f"parts file {path} does not exist; pass a JSON file mapping part name -> box")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise IntrospectError(
            f"parts file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 JSON"
        ) from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise IntrospectError(
                f"parts file {path.name} is YAML but PyYAML is not installed; write it as JSON "
                "(same structure) or `pip install pyyaml`"
            ) from None
        try:
            data = yaml.safe_load(text)
        except Exception as exc:  # noqa: BLE001 - any parse error is the user's file
            raise IntrospectError(f"parts file {path} is not valid YAML ({str(exc).splitlines()[0]}); fix it") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise IntrospectError(f"parts file {path} is not valid JSON ({exc}); fix it") from None
        except RecursionError:
            raise IntrospectError(f"parts file {path} is nested too deeply to be a parts file; fix it") from None
    if not isinstance(data, Mapping) or not data:
        raise IntrospectError(
            f"parts file {path} must map part names to boxes, e.g. {{\"nose\": [9, 8, 15, 13]}}; "
            f"got {type(data).__name__}"
        )
    return dict(data)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def is_box(spec: Any) -> bool:
    """True when ``spec`` is one box: 4 numbers, or a mapping with exactly the keys y0, x0, y1, x1."""
    if isinstance(spec, Mapping):
        return set(spec) == set(BOX_KEYS)
    if isinstance(spec, (list, tuple)) and len(spec) == 4:
        return all(_is_number(v) for v in spec)
    if hasattr(spec, "tolist") and getattr(spec, "ndim", None) == 1 and len(spec) == 4:
        return True
    return False


def parse_box(spec: Any, where: str) -> tuple[float, float, float, float]:
    """One box ``(y0, x0, y1, x1)`` as floats from a list/tuple/array of 4 numbers or a y0/x0/y1/x1 mapping."""
    if spec is None:
        raise IntrospectError(f"{where} has no box; give [y0, x0, y1, x1] for every image")
    if hasattr(spec, "tolist") and not isinstance(spec, (list, tuple, Mapping)):
        spec = spec.tolist()
    if isinstance(spec, Mapping):
        if set(spec) != set(BOX_KEYS):
            raise IntrospectError(
                f"{where}: a box mapping needs exactly the keys y0, x0, y1, x1, got {sorted(map(str, spec))}; "
                "or write [y0, x0, y1, x1]"
            )
        spec = [spec[k] for k in BOX_KEYS]
    if not isinstance(spec, (list, tuple)) or len(spec) != 4 or not all(_is_number(v) for v in spec):
        raise IntrospectError(f"{where}: {spec!r} is not a box; write [y0, x0, y1, x1] (4 finite numbers, not "
                              "NaN, infinity or true/false; end-exclusive)")
    return tuple(float(v) for v in spec)


def _round_out(box: Sequence[float]) -> Box:
    y0, x0, y1, x1 = box
    return (math.floor(y0 + 1e-9), math.floor(x0 + 1e-9), math.ceil(y1 - 1e-9), math.ceil(x1 - 1e-9))


def check_box(box: Sequence[float], hw: tuple[int, int], where: str, what: str = "image") -> Box:
    """Round ``box`` outward to whole pixels and check it is non-empty and inside ``hw = (H, W)``.

    Raises:
        IntrospectError: the box is empty (``y1 <= y0`` or ``x1 <= x0``) or reaches outside.
    """
    y0, x0, y1, x1 = box
    shown = "[" + ", ".join(f"{v:g}" for v in box) + "]"
    if y1 <= y0 or x1 <= x0:
        raise IntrospectError(f"{where}: box {shown} is empty; boxes are [y0, x0, y1, x1] with y0 < y1 and x0 < x1")
    h, w = hw
    if y0 < 0 or x0 < 0 or y1 > h or x1 > w:
        raise IntrospectError(
            f"{where}: box {shown} lies outside the {what} (height {h}, width {w}); "
            f"boxes are [y0, x0, y1, x1] with 0 <= y0 < y1 <= {h} and 0 <= x0 < x1 <= {w}"
        )
    return _round_out(box)


def _name_keys(name: str) -> list[str]:
    return [name, Path(name).name, Path(name).stem]


def boxes_per_image(parts: Mapping[str, Any], names: Sequence[str]) -> dict[str, list[tuple[float, ...]]]:
    """Expand a parts specification to one box per image and part (not yet checked against sizes).

    Args:
        parts (Mapping): part name -> box specification (see the module docstring).
        names (sequence of str): the image names, in order (file paths as given, or ``image 0``...).

    Returns:
        dict[str, list[tuple]]: part name -> ``len(names)`` boxes ``(y0, x0, y1, x1)`` as floats.

    Raises:
        IntrospectError: no parts, a part named ``random``, a list with the wrong number of boxes, a
            part without a box for some image, or a box for an image that was not given.

    Example:
        >>> boxes_per_image({"nose": [9, 8, 15, 13]}, ["a.png", "b.png"])
        {'nose': [(9.0, 8.0, 15.0, 13.0), (9.0, 8.0, 15.0, 13.0)]}
    """
    if not isinstance(parts, Mapping) or not parts:
        raise IntrospectError("no parts given; pass a mapping part name -> box, e.g. {'nose': [9, 8, 15, 13]}")
    n = len(names)
    out: dict[str, list[tuple[float, ...]]] = {}
    for part, spec in parts.items():
        part = str(part)
        if part == RESERVED:
            raise IntrospectError(f"part name {RESERVED!r} is reserved for the random control; rename that part")
        if not part.strip():
            raise IntrospectError("a part has an empty name; give every part a name")
        if is_box(spec):
            box = parse_box(spec, f"part {part!r}")
            out[part] = [box] * n
        elif isinstance(spec, Mapping) and set(map(str, spec)) & set(BOX_KEYS):
            parse_box(spec, f"part {part!r}")  # a box with missing or extra keys: says which are needed
        elif isinstance(spec, Mapping):
            out[part] = _boxes_by_name(part, spec, names)
        elif isinstance(spec, (list, tuple)) or hasattr(spec, "tolist"):
            items = list(spec.tolist() if hasattr(spec, "tolist") else spec)
            if len(items) == 4 and not any(isinstance(v, (list, tuple, Mapping)) for v in items):
                parse_box(items, f"part {part!r}")  # 4 values that are not all finite numbers: say so
            if len(items) != n:
                raise IntrospectError(
                    f"part {part!r} has {len(items)} boxes for {n} images; give one box per image, "
                    "or a single [y0, x0, y1, x1] for all"
                )
            out[part] = [parse_box(b, f"part {part!r} of image {names[i]!r}") for i, b in enumerate(items)]
        else:
            raise IntrospectError(
                f"part {part!r}: {spec!r} is not a box specification; use [y0, x0, y1, x1], a list of "
                "boxes (one per image) or a mapping image name -> box"
            )
    return out


def _boxes_by_name(part: str, spec: Mapping, names: Sequence[str]) -> list[tuple[float, ...]]:
    lookup: dict[str, int] = {}
    for i, name in enumerate(names):
        for key in _name_keys(name):
            lookup.setdefault(key, i)
    boxes: list = [None] * len(names)
    for key, value in spec.items():
        index = lookup.get(str(key))
        if index is None:
            raise IntrospectError(
                f"part {part!r} has a box for image {key!r}, which was not given; images are "
                f"{', '.join(repr(Path(x).name) for x in names)}"
            )
        boxes[index] = parse_box(value, f"part {part!r} of image {names[index]!r}")
    for i, box in enumerate(boxes):
        if box is None:
            raise IntrospectError(
                f"part {part!r} is missing for image {Path(names[i]).name!r}; give a box for every image"
            )
    return boxes


__all__ = ["load_parts", "is_box", "parse_box", "check_box", "boxes_per_image", "BOX_KEYS", "RESERVED"]
