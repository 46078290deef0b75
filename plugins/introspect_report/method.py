"""``introspect.report``: the microscope site of a model over a folder of images."""
from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from introspect import layer_table
from introspect.plugin import (
    IntrospectError,
    Progress,
    Shown,
    display_name,
    jsonable,
    meta_of,
    resolve_layer,
    short_list,
)
from introspect_report import compute, site
from introspect_report.data import Data, default_layers, open_data, stem
from introspect_report.store import FORMAT, GENERATOR, MANIFEST, SiteFolder, fingerprint


@dataclass(repr=False)
class Report(Shown):
    """What :func:`report` built.

    Attributes:
        out (Path): the site folder; ``index`` its ``index.html``.
        layers (list[str]): the reported layers (canonical names); ``images`` the images with a page.
        pages (list[str]), files (list[str]): every page and every file of the site, relative to ``out``.
        reused (list[str]): the units taken from the previous site (``layer:conv5``, ``image:3``...).
        skipped (list[str]): image files left out as unreadable (``skip_bad``).
        fingerprint (str): model weights, data file list and options.
        seconds (float): time to build.
        moved_aside (Path | None): where ``force`` moved a folder of someone else's files that was in
            the way (nothing is deleted).
    """

    out: Path
    layers: list[str]
    images: list[int]
    pages: list[str]
    files: list[str]
    reused: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    fingerprint: str = ""
    seconds: float = 0.0
    moved_aside: Path | None = None

    @property
    def index(self) -> Path:
        return self.out / "index.html"

    def to_dict(self) -> dict:
        return {"method": "report", "out": str(self.out), "index": str(self.index), "layers": self.layers,
                "images": self.images, "pages": len(self.pages), "files": len(self.files), "reused": self.reused,
                "skipped": self.skipped, "fingerprint": self.fingerprint, "seconds": self.seconds,
                "moved_aside": str(self.moved_aside) if self.moved_aside else None}

    def _repr_lines(self) -> list[str]:
        return [f"Report: {len(self.pages)} pages, {len(self.files)} files in {self.index}",
                f"  layers {short_list([p[7:-5] for p in self.pages if p.startswith('layers/')])}; "
                f"{len(self.images)} image pages; "
                f"{len(self.reused)} units reused, {len(self.skipped)} images skipped; {self.seconds:.1f} s"]

    def _figures(self) -> dict:
        """The site's figures, by path in the site: the filters (Fig. 6), then each image's Fig. 7 panels."""
        from PIL import Image

        names = [f[:-4] for f in self.files if f == "data/filters/filters.png"
                 or (f.startswith("data/images/") and f.endswith("/occlusion/figure.png"))]
        return {n: (lambda n=n: Image.open(self.out / f"{n}.png").convert("RGB")) for n in names}

    def save(self, out=None) -> list[Path]:
        """The site is already written; returns its files."""
        return [self.out / f for f in self.files]


def report(model: nn.Module, dataset=None, *, out: str | os.PathLike = "introspect-out/report",
           layers: str | Sequence[str] | None = None, k: int = 9, images: int | None = None,
           batch_size: int = 32, workers: int = 0, limit: int | None = None, force: bool = False,
           skip_bad: bool = False, progress: Progress | None = None, command: str | None = None) -> Report:
    """Write a static, self-contained site (``out/index.html``) that browses ``model`` over ``dataset``.

    Pages: an index (model, layer table, links), a page per layer (every feature map as a thumbnail
    of its strongest projection, sortable, dead maps marked), a page per feature map (its top-``k``
    images, projection beside receptive-field patch: the paper's Fig. 2), a page per image (top-5
    classes, the Fig. 7 occlusion panels, the strongest maps of each layer) and a filters page
    (Fig. 6). Beside the pages: ``data/layers/<layer>/top.json`` (``introspect top``'s format), each
    image's occlusion arrays as ``introspect occlusion`` writes them, ``data/filters/`` as
    ``introspect filters`` writes it, and ``report.json``, the manifest of every page and file.

    The site is built in a staging folder and replaces ``out`` in one step when complete; an error or
    an interruption leaves the previous site as it was. Units of the previous site (a layer, an
    image, the filters) with the same fingerprint (weights, data file list, ``k``, preprocessing)
    are reused; ``force`` recomputes everything, replaces another command's output and moves a
    folder of other files aside (``<out>.replaced-<time>``; nothing is deleted).

    Args:
        model (nn.Module): a classifier taking ``N x C x H x W`` images.
        dataset: a folder of images (flat or one subfolder per class), an
            :class:`introspect.images.ImageFolderDataset`, a map-style data set of image tensors or
            ``(image, label)`` pairs, or an ``(N, C, H, W)`` tensor; default the bundled images.
        out (str | os.PathLike): the site folder.
        layers (str | sequence of str | None): layers to report (names or aliases); default the
            paper's ``conv1..conv5`` on the bundled models, the stages of other models.
        k (int): images per feature map (default 9).
        images (int | None): how many images get a page (the first ones); default all.
        batch_size (int), workers (int): for the passes over the data.
        limit (int | None): use only the first ``limit`` images of the data set.
        force (bool): recompute everything; replace an ``out`` that is not a report (files introspect
            did not write are moved aside, never deleted).
        skip_bad (bool): leave out unreadable image files (listed in the report) instead of failing.
        progress (callable | None): ``progress(phase, done, total)``.
        command (str | None): the command line to show on the index page.

    Returns:
        Report: the folder, pages, files, reused units and timings.

    Example:
        >>> model = introspect.load_model(None)               # the bundled ZFNet
        >>> built = introspect.report(model, out="site", k=4)  # the bundled images
        >>> built.index                                        # open it in a browser
        PosixPath('site/index.html')
    """
    started = time.perf_counter()
    _check_args(k, images, batch_size, workers, limit)
    compute.check_methods()
    if dataset is None:
        from introspect.plugin import bundled_image_dir

        dataset = bundled_image_dir()
    data = open_data(dataset, model, limit=limit, skip_bad=skip_bad, progress=progress)
    names = _layers(model, layers)
    compute.check_layers(model, data, [n for n, _ in names])
    meta = meta_of(model)
    options = {"k": k, "input_size": list(meta.input_size), "mean": list(meta.mean), "std": list(meta.std),
               "skipped": data.skipped, "format": FORMAT}
    fp = fingerprint(model, data.names, data.files, options)
    shown = list(range(len(data) if images is None else min(images, len(data))))
    with SiteFolder(out, force, command) as folder:
        old = folder.previous if folder.previous and folder.previous.get("fingerprint") == fp else None
        build = _Build(folder, old, progress)
        layer_docs = [build.layer(model, data, name, s, k, batch_size, workers) for name, s in names]
        top5 = compute.predictions(model, data, [n for n in shown if not build.has_image(n)], batch_size)
        image_docs = []
        for done, n in enumerate(shown, 1):
            image_docs.append(build.image(model, data, n, top5.get(n), layer_docs))
            if progress is not None:
                progress("images", done, len(shown))
        filters = build.filters(model, data, batch_size)
        doc = _site_doc(model, data, layer_docs, image_docs, filters, fp, command)
        pages = site.write_pages(doc, build.text)
        manifest = _manifest(doc, build, pages, options)
        build.text(MANIFEST, _json(manifest))
    return Report(Path(out), [n for n, _ in names], shown, pages, sorted(build.files),
                  build.reused, data.skipped, fp, time.perf_counter() - started, folder.moved_aside)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("introspect")
    except PackageNotFoundError:
        return "unknown"


def _check_args(k, images, batch_size, workers, limit) -> None:
    for name, value, low in (("k", k, 1), ("batch_size", batch_size, 1), ("workers", workers, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise IntrospectError(f"{name} must be an integer >= {low}, got {value!r}")
    for name, value in (("images", images), ("limit", limit)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise IntrospectError(f"{name} must be a positive integer or None, got {value!r}")


def _layers(model: nn.Module, layers) -> list[tuple[str, str]]:
    """``(canonical name, file stem)`` of each layer to report, in the order given, without repeats."""
    if isinstance(layers, str):
        layers = [part.strip() for part in layers.split(",") if part.strip()]
    chosen = list(layers) if layers else default_layers(model)
    found, stems = [], set()
    for layer in chosen:
        name, _ = resolve_layer(model, layer)
        if any(name == n for n, _ in found):
            continue
        s = stem(display_name(model, name))
        while s in stems:
            s += "_"
        stems.add(s)
        found.append((name, s))
    return found


class _Build:
    """Writes files into the staging folder, and reuses units of the previous site."""

    def __init__(self, folder: SiteFolder, old: dict | None, progress: Progress | None):
        self.folder, self.old, self.progress = folder, old, progress
        self.files: set[str] = set()
        self.units: dict[str, list[str]] = {}
        self.reused: list[str] = []
        self._unit: list[str] | None = None

    # -- writing -------------------------------------------------------------------------------
    def _path(self, rel: str) -> Path:
        path = self.folder.path(rel)
        self.files.add(rel)
        if self._unit is not None:
            self._unit.append(rel)
        return path

    def save(self, rel: str, obj) -> None:
        """A PNG (uint8 array) or JSON (anything else)."""
        import numpy as np
        from PIL import Image

        path = self._path(rel)
        if isinstance(obj, np.ndarray):
            Image.fromarray(obj).save(path, format="PNG", compress_level=3)
        else:
            path.write_text(_json(obj), encoding="utf-8")

    def text(self, rel: str, text: str) -> None:
        self._path(rel).write_text(text, encoding="utf-8")

    def save_dir(self, rel: str, writer) -> list[str]:
        """``writer(folder)`` (a result's ``save``) into ``rel``; returns the file names in it."""
        target = self.folder.folder(rel, "result.json")
        writer(target)
        names = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
        for name in names:
            if name != "result.json":
                self.folder.path(f"{rel}/{name}")  # claimed in the output folder (already written)
            self.files.add(f"{rel}/{name}")
            if self._unit is not None:
                self._unit.append(f"{rel}/{name}")
        return names

    # -- units ---------------------------------------------------------------------------------
    def _reuse(self, key: str, main: str):
        """The JSON record ``main`` of unit ``key`` from the previous site, its files linked in."""
        if self.old is None:
            return None
        files = self.old.get("units", {}).get(key)
        if not files or main not in files or not self.folder.reuse(files):
            return None
        import json

        try:
            doc = json.loads((self.folder.out / main).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        self.files.update(files)
        self.units[key] = list(files)
        self.reused.append(key)
        return doc

    def _compute(self, key: str, fn):
        self._unit = []
        try:
            doc = fn()
        finally:
            self.units[key], self._unit = self._unit, None
        return doc

    def layer(self, model, data: Data, name: str, s: str, k: int, batch_size: int, workers: int) -> dict:
        key = f"layer:{name}"
        doc = self._reuse(key, f"data/layers/{s}/top.json")
        if doc is None or doc.get("stem") != s:
            doc = self._compute(key, lambda: compute.layer_unit(model, data, name, s, k, batch_size=batch_size,
                                                                workers=workers, save=self.save,
                                                                progress=self.progress))
        doc["dead"] = sum(1 for m in doc["maps"] if not m["top"] or m["top"][0]["activation"] <= 0)
        return doc

    def has_image(self, n: int) -> bool:
        return self.old is not None and f"image:{n}" in self.old.get("units", {})

    def image(self, model, data: Data, n: int, top5, layer_docs: list[dict]) -> dict:
        key = f"image:{n}"
        doc = self._reuse(key, f"{compute.image_dir(n)}/image.json")
        if doc is None:
            if top5 is None:
                top5 = compute.predictions(model, data, [n], 1)[n]
            doc = self._compute(key, lambda: compute.image_unit(model, data, n, top5, self.save, self.save_dir))
        doc["layers"] = {}
        for layer in layer_docs:
            lkey = f"image:{n}:{layer['layer']}"
            maps = self._reuse(lkey, f"{compute.image_dir(n)}/{layer['stem']}/maps.json")
            if maps is None:
                maps = self._compute(lkey, lambda layer=layer: compute.image_layer_unit(
                    model, data, n, layer["layer"], layer["stem"], layer["digits"], self.save))
            doc["layers"][layer["layer"]] = maps
        return doc

    def filters(self, model, data: Data, batch_size: int) -> dict:
        doc = self._reuse("filters", "data/filters/result.json")
        if doc is None:
            doc = self._compute("filters", lambda: compute.filters_unit(model, data, batch_size, self.save_dir,
                                                                        self.progress))
        return doc


def _json(obj) -> str:
    import json

    return json.dumps(jsonable(obj), indent=1, allow_nan=False) + "\n"


def _site_doc(model, data: Data, layer_docs, image_docs, filters, fp: str, command: str | None) -> dict:
    meta = meta_of(model)
    rows = [r.to_dict() for r in layer_table(model, meta.input_size)]
    source = meta.source or "an nn.Module"
    import torchvision

    return {
        "model": {"architecture": meta.arch or type(model).__name__, "weights": source,
                  "parameters": sum(p.numel() for p in model.parameters()), "input_size": list(meta.input_size),
                  "mean": [round(v, 4) for v in meta.mean], "std": [round(v, 4) for v in meta.std],
                  "classes": list(meta.classes or [])},
        "data": {"images": len(data), "source": _source(data), "skipped": data.skipped},
        "layer_table": rows, "layers": layer_docs, "images": image_docs, "filters": filters,
        "fingerprint": fp, "command": command or "introspect.report(...)",
        "built": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "versions": {"introspect": _version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
                     "python": platform.python_version()},
    }


def _source(data: Data) -> str:
    if data.files:
        import os.path

        return os.path.commonpath([str(p.parent) for p in data.files])
    return "an in-memory data set"


def _manifest(doc: dict, build: _Build, pages: list[str], options: dict) -> dict:
    return {
        "generator": GENERATOR, "format": FORMAT, "version": _version(), "fingerprint": doc["fingerprint"],
        "command": doc["command"], "built": doc["built"], "options": options,
        "layers": [{"layer": d["layer"], "name": d["name"], "stem": d["stem"], "maps": len(d["maps"]),
                    "dead": d["dead"], "page": site.layer_page(d["stem"])} for d in doc["layers"]],
        "images": [{"index": d["index"], "name": d["name"], "page": site.image_page(d["index"])}
                   for d in doc["images"]],
        "skipped": doc["data"]["skipped"], "pages": pages, "files": sorted(build.files | {MANIFEST}),
        "units": build.units,
    }


__all__ = ["Report", "report"]
