"""``introspect.report``: the microscope site of a model over a folder of images."""
from __future__ import annotations

import contextlib
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
    check_ranks,
    display_name,
    group_of,
    jsonable,
    meta_of,
    resolve_layer,
    share_object,
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
        written (bool): this process wrote the site; False on the ranks other than 0 of a
            ``torchrun`` (their report names the layers and images, no pages or files).
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
    written: bool = True

    @property
    def index(self) -> Path:
        return self.out / "index.html"

    def to_dict(self) -> dict:
        return {"method": "report", "out": str(self.out), "index": str(self.index), "layers": self.layers,
                "images": self.images, "pages": len(self.pages), "files": len(self.files), "reused": self.reused,
                "skipped": self.skipped, "fingerprint": self.fingerprint, "seconds": self.seconds,
                "moved_aside": str(self.moved_aside) if self.moved_aside else None, "written": self.written}

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
           skip_bad: bool = False, progress: Progress | None = None, command: str | None = None,
           distributed: bool | None = None) -> Report:
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
        distributed (bool | None): several processes (``torchrun``): None (default) uses the
            default process group when one is initialized with more than one process, True requires
            one, False ignores it. Every rank calls ``report`` with the same arguments and mines its
            share of the data for each layer (``introspect.top_k``, merged exactly); rank 0 alone
            writes ``out`` and computes the rest of the site. An error on any rank before or while
            mining stops every rank with the same one line.

    Returns:
        Report: the folder, pages, files, reused units and timings; on ranks other than 0 a report
        with ``written`` False and no pages or files (rank 0 writes the site).

    Example:
        >>> model = introspect.load_model(None)               # the bundled ZFNet
        >>> built = introspect.report(model, out="site", k=4)  # the bundled images
        >>> built.index                                        # open it in a browser
        PosixPath('site/index.html')
    """
    started = time.perf_counter()
    group = group_of(distributed)
    lead = group is None or group.lead
    with contextlib.ExitStack() as stack:
        error, todo = None, None
        try:  # every rank checks the input; rank 0 alone opens --out and decides what is left to do
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
            if lead:
                folder = stack.enter_context(SiteFolder(out, force, command))
                old = folder.previous if folder.previous and folder.previous.get("fingerprint") == fp else None
                build = _Build(folder, old, progress)
                layer_docs = {name: build.reused_layer(name, s) for name, s in names}
                page_maps = {name: {n: build.reused_page(n, name, s) for n in shown} for name, s in names}
                todo = [name for name, _ in names if layer_docs[name] is None]
        except Exception as exc:  # the other ranks must hear of it, or they wait for rank 0
            error = exc
        check_ranks(error, "checking the model, the data and --out")
        todo = share_object(todo, "sharing the layers to mine")
        tops = {name: compute.mine_layer(model, data, name, k, batch_size=batch_size, workers=workers, label=s,
                                         progress=progress, distributed=group is not None)
                for name, s in names if name in todo}
        if not lead:
            return Report(Path(out), [n for n, _ in names], shown, [], [], fingerprint=fp,
                          seconds=time.perf_counter() - started, written=False)
        docs = [build.layer(model, data, name, s, layer_docs[name], tops.get(name), page_maps[name], batch_size)
                for name, s in names]
        top5 = compute.predictions(model, data, [n for n in shown if not build.has_image(n)], batch_size)
        image_docs = []
        for done, n in enumerate(shown, 1):
            doc = build.image(model, data, n, top5.get(n))
            doc["layers"] = {layer["layer"]: page_maps[layer["layer"]][n] for layer in docs}
            image_docs.append(doc)
            if progress is not None:
                progress("images", done, len(shown))
        filters = build.filters(model, data, batch_size)
        doc = _site_doc(model, data, docs, image_docs, filters, fp, command)
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
    """Writes files into the staging folder, each into a unit (a layer's map pages, an image, an
    image's maps of one layer, the filters), and reuses units of the previous site."""

    def __init__(self, folder: SiteFolder, old: dict | None, progress: Progress | None):
        self.folder, self.old, self.progress = folder, old, progress
        self.files: set[str] = set()
        self.units: dict[str, list[str]] = {}
        self.reused: list[str] = []
        self._unit: str | None = None

    # -- writing -------------------------------------------------------------------------------
    def _path(self, rel: str, unit: str | None) -> Path:
        path = self.folder.path(rel)
        self._claim(rel, unit)
        return path

    def _claim(self, rel: str, unit: str | None) -> None:
        self.files.add(rel)
        unit = unit or self._unit
        if unit is not None:
            self.units[unit].append(rel)

    def save(self, rel: str, obj, unit: str | None = None) -> None:
        """A PNG (uint8 array) or JSON (anything else), in ``unit`` (default: the one being computed)."""
        import numpy as np
        from PIL import Image

        path = self._path(rel, unit)
        if isinstance(obj, np.ndarray):
            Image.fromarray(obj).save(path, format="PNG", compress_level=3)
        else:
            path.write_text(_json(obj), encoding="utf-8")

    def saver(self, unit: str):
        """``save`` into a new unit ``unit`` (what the previous site had under that key is not used)."""
        self.units[unit] = []
        if unit in self.reused:
            self.reused.remove(unit)
        return lambda rel, obj: self.save(rel, obj, unit)

    def text(self, rel: str, text: str) -> None:
        self._path(rel, None).write_text(text, encoding="utf-8")

    def save_dir(self, rel: str, writer) -> list[str]:
        """``writer(folder)`` (a result's ``save``) into ``rel``; returns the file names in it."""
        target = self.folder.folder(rel, "result.json")
        writer(target)
        names = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
        for name in names:
            if name != "result.json":
                self.folder.path(f"{rel}/{name}")  # claimed in the output folder (already written)
            self._claim(f"{rel}/{name}", None)
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
        self.saver(key)
        self._unit = key
        try:
            return fn()
        finally:
            self._unit = None

    def reused_layer(self, name: str, s: str) -> dict | None:
        """The ranking (``top.json``) and map pages of layer ``name`` from the previous site, or None."""
        doc = self._reuse(f"layer:{name}", f"data/layers/{s}/top.json")
        return doc if doc is not None and doc.get("stem") == s else None

    def reused_page(self, n: int, name: str, s: str) -> dict | None:
        """Image ``n``'s strongest maps of layer ``name`` from the previous site, or None."""
        return self._reuse(f"image:{n}:{name}", f"{compute.image_dir(n)}/{s}/maps.json")

    def layer(self, model, data: Data, name: str, s: str, doc: dict | None, top, page_maps: dict[int, dict | None],
              batch_size: int) -> dict:
        """Layer ``name``'s record: written from the ranking ``top`` when ``doc`` (reused) is None;
        then the projections its map pages (when new) and the image pages still missing in
        ``page_maps`` (filled in) need, in one pass."""
        save_map = None
        if doc is None:
            save_map = self.saver(f"layer:{name}")
            doc = compute.layer_doc(top, data, s, save_map)
        missing = [n for n, maps in page_maps.items() if maps is None]
        if top is not None or missing:
            page_maps.update(compute.project_layer(
                model, data, name, s, doc["digits"], doc if top is not None else None, missing,
                batch_size=batch_size, save_map=save_map,
                save_page=lambda n: self.saver(f"image:{n}:{name}"), progress=self.progress))
        doc["dead"] = sum(1 for m in doc["maps"] if not m["top"] or m["top"][0]["activation"] <= 0)
        return doc

    def has_image(self, n: int) -> bool:
        return self.old is not None and f"image:{n}" in self.old.get("units", {})

    def image(self, model, data: Data, n: int, top5) -> dict:
        key = f"image:{n}"
        doc = self._reuse(key, f"{compute.image_dir(n)}/image.json")
        if doc is None:
            if top5 is None:
                top5 = compute.predictions(model, data, [n], 1)[n]
            doc = self._compute(key, lambda: compute.image_unit(model, data, n, top5, self.save, self.save_dir))
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
