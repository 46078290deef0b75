"""The work behind a report, through the public methods of the other plugins.

Each function computes one unit of the site (a layer, an image, the filters), writes its files
into the staging folder through ``save(rel, array)`` and returns the JSON-ready record the pages are
built from. Other plugins are reached only as ``introspect.<method>`` (see :func:`method`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from introspect.plugin import IntrospectError, attach, eval_mode, meta_of, model_device, require_method, to_uint8

NEEDED = {
    "top_k": "introspect_deconv (top-k mining)",
    "occlusion": "introspect_occlusion (Fig. 7)",
    "first_layer_filters": "introspect_filters (Fig. 6)",
}
THUMB = 64          # thumbnail side, pixels
IMAGE_MAPS = 9      # strongest maps shown per layer on an image page
TOP_CLASSES = 5


def method(name: str) -> Callable:
    """``introspect.<name>``, or a one-line error naming the plugin that provides it."""
    return require_method(name, f"introspect report (through the plugin {NEEDED[name]})")


def check_methods() -> None:
    for name in NEEDED:
        method(name)


# --------------------------------------------------------------------------------------------------
# pictures
# --------------------------------------------------------------------------------------------------
def _crop(t: torch.Tensor, box: Sequence[int]) -> torch.Tensor:
    y0, x0, y1, x1 = (int(v) for v in box)
    return t if y1 <= y0 or x1 <= x0 else t[..., y0:y1, x0:x1]


def projection_tile(projection: torch.Tensor, box: Sequence[int]) -> np.ndarray:
    """A deconvnet projection cropped to its receptive field, zero as mid-grey."""
    return to_uint8(_crop(projection, box), "symmetric")


def image_tile(image: torch.Tensor, box: Sequence[int] | None, mean, std) -> np.ndarray:
    """The ``box`` of a preprocessed ``(C, H, W)`` image (the whole image without a box) as RGB."""
    t = _crop(image, box) if box is not None else image
    c = t.shape[0]
    if len(mean) == c and len(std) == c:
        t = t * torch.tensor(std, dtype=t.dtype).view(-1, 1, 1) + torch.tensor(mean, dtype=t.dtype).view(-1, 1, 1)
        return to_uint8(t.clamp(0, 1), None)
    return to_uint8(t, "minmax")


def thumbnail(tile: np.ndarray, side: int = THUMB) -> np.ndarray:
    """``tile`` shrunk so its longer side is at most ``side`` (small tiles are kept as they are)."""
    from PIL import Image

    h, w = tile.shape[:2]
    if max(h, w) <= side:
        return tile
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(tile).resize(size, Image.Resampling.BILINEAR))


# --------------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------------
def check_layers(model: nn.Module, data, layers: Sequence[str]) -> None:
    """Run one image to the layers; a layer that does not run gets one line before any work."""
    from introspect.plugin import alias_of

    x = data.image(0)[None].to(model_device(model))
    with eval_mode(model), torch.no_grad(), attach(model, list(layers)) as rec:
        try:
            rec.forward(x, stop=True)
        except IntrospectError:
            raise
        except Exception as exc:
            raise IntrospectError(f"the model cannot run on the images ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else ''}); check the model and "
                                  "the input size") from None
        for name in layers:
            act = rec.activations.get(name)
            alias = alias_of(model, name)
            shown = f"{alias!r} ({name})" if alias else repr(name)
            if act is None:
                raise IntrospectError(f"layer {shown} did not run in the forward pass; choose another layer "
                                      "(`introspect layers` lists them)")
            if act.dim() != 4:
                raise IntrospectError(f"layer {shown} gives {act.dim()}-D outputs, not feature maps; "
                                      "choose a convolutional layer")


def map_file(stem: str, channel: int, rank: int, digits: int, kind: str) -> str:
    return f"data/layers/{stem}/top/c{channel:0{digits}d}-r{rank}{'-patch' if kind == 'patch' else ''}.png"


def thumb_file(stem: str, channel: int, digits: int) -> str:
    return f"data/layers/{stem}/thumbs/c{channel:0{digits}d}.png"


def digits_for(n_maps: int) -> int:
    return max(4, len(str(max(n_maps - 1, 0))))


def mine_layer(model: nn.Module, data, name: str, k: int, *, batch_size: int, workers: int, label: str,
               progress=None, distributed: bool = False):
    """The top-``k`` ranking of every map of ``name`` over the data (``introspect.top_k`` without
    projections). With ``distributed`` every rank of the process group calls it and mines its share;
    every rank gets the merged ranking."""
    return method("top_k")(model, data.dataset, layer=name, k=k, project=False, batch_size=batch_size,
                           workers=workers, progress=_phase(progress, label), distributed=distributed)


def layer_doc(top, data, stem: str, save) -> dict:
    """Write the ranking ``top`` as ``top.json`` (``introspect top``'s format, with image names);
    returns it with ``stem`` and ``digits``."""
    doc = top.to_dict()
    for m in doc["maps"]:
        for entry in m["top"]:
            entry["image_name"] = data.names[entry["image"]]
    doc.pop("arrays", None)
    doc.pop("array_shape", None)
    doc.update(stem=stem, digits=digits_for(len(doc["maps"])))
    save(f"data/layers/{stem}/top.json", doc)
    for m in doc["maps"]:  # a map no image ever reached (an empty data set share): a grey thumbnail
        if not m["top"]:
            save(thumb_file(stem, m["channel"], doc["digits"]), np.full((8, 8, 3), 128, np.uint8))
    return doc


#: Bytes of projection windows computed at once.
WINDOW_BYTES = 128 << 20


def project_layer(model: nn.Module, data, name: str, stem: str, digits: int, doc: dict | None,
                  pages: Sequence[int], *, batch_size: int, save_map, save_page, progress=None) -> dict[int, dict]:
    """Every projection a layer's pages show, each (image, map) computed once.

    The map pages need the deconvnet projection of each winner of ``doc`` (the ranking; None when
    the map pages were reused), the image pages of images ``pages`` the :data:`IMAGE_MAPS`
    strongest maps of each (``introspect.project``'s choice). The images are read in batches; each
    batch gets one forward pass and its projections are computed in the receptive-field windows
    only (``Deconvnet.windows``), several maps per pass. A projection both pages need is computed
    once and written to both. ``save_map(rel, array)`` writes the map pages' tiles,
    ``save_page(n)(rel, obj)`` image ``n``'s.

    Returns:
        dict[int, dict]: the ``maps.json`` record of each image of ``pages``.
    """
    from introspect.plugin import Deconvnet, Frame, layer_field, strongest

    wins: dict[int, list[tuple[int, int, tuple[int, int]]]] = {}
    for m in (doc or {}).get("maps", []):
        for entry in m["top"]:
            wins.setdefault(entry["image"], []).append((m["channel"], entry["rank"], tuple(entry["position"])))
    wanted, todo = set(pages), sorted(set(wins) | set(pages))
    meta = meta_of(model)
    records: dict[int, dict] = {}
    first, size, done = 0, batch_size, 0
    while first < len(todo):
        group = todo[first:first + size]
        x = torch.stack([data.image(n) for n in group]).to(model_device(model))
        net = Deconvnet(model, x, name)
        if net.method == "autograd" and len(group) > 1:
            size = 1  # a batched backward pass runs over every image of the batch: one image each
            continue
        first += len(group)
        image_hw = tuple(x.shape[-2:])
        field = layer_field(model, name, tuple(x.shape[1:]))
        values, positions = strongest(net.activations)
        values, positions = values.float().cpu(), positions.cpu()
        wanted_here: dict[tuple[int, int], tuple[int, int]] = {}
        chosen: dict[int, list[int]] = {}
        for b, n in enumerate(group):
            for c, _, pos in wins.get(n, []):
                wanted_here.setdefault((b, c), pos)
            if n in wanted:
                order = torch.sort(values[b].nan_to_num(float("-inf")), descending=True, stable=True).indices
                chosen[n] = order[:IMAGE_MAPS].tolist()
                for c in chosen[n]:
                    wanted_here.setdefault((b, c), tuple(positions[b, c].tolist()))
        tiles = _project_tiles(net, Frame.of(field, image_hw, "max"), field, wanted_here, x.float().cpu(), meta)
        for b, n in enumerate(group):
            for c, r, _ in wins.get(n, []):
                proj, patch, _, _ = tiles[b, c]
                save_map(map_file(stem, c, r, digits, "proj"), proj)
                save_map(map_file(stem, c, r, digits, "patch"), patch)
                if r == 0:
                    save_map(thumb_file(stem, c, digits), thumbnail(proj))
            if n in chosen:
                records[n] = _page_maps(n, name, stem, digits, chosen[n], b, tiles, values, save_page(n))
        done += len(group)
        if progress is not None:
            progress(f"project {stem}", done, len(todo))
    return records


def _project_tiles(net, frame, field, wanted: dict, images: torch.Tensor, meta) -> dict:
    """``{(b, c): (projection tile, patch tile, box, position)}`` of map ``c`` of image ``b`` of the batch, its
    activation at ``wanted[(b, c)]`` kept: windows of the receptive field, in chunks of
    :data:`WINDOW_BYTES`."""
    keys = list(wanted)
    image_hw = tuple(images.shape[-2:])
    chunk = max(1, WINDOW_BYTES // (4 * images.shape[1] * frame.size[0] * frame.size[1]))
    tiles = {}
    for start in range(0, len(keys), chunk):
        part = keys[start:start + chunk]
        b = torch.tensor([key[0] for key in part], dtype=torch.int64)
        c = torch.tensor([key[1] for key in part], dtype=torch.int64)
        pos = torch.tensor([wanted[key] for key in part], dtype=torch.int64).view(-1, 2)
        windows, origins = net.windows(b, c, frame, mode="max", position=pos)
        for i, key in enumerate(part):
            box = list(field.receptive_box(*pos[i].tolist(), image_hw))
            oy, ox = origins[i].tolist()
            inside = [box[0] - oy, box[1] - ox, box[2] - oy, box[3] - ox]
            tiles[key] = (projection_tile(windows[i], inside),
                          image_tile(images[key[0]], box, meta.mean, meta.std), box, pos[i].tolist())
    return tiles


def _page_maps(n: int, name: str, stem: str, digits: int, channels: list[int], b: int, tiles: dict,
               values: torch.Tensor, save) -> dict:
    """Write image ``n``'s tiles of its strongest maps ``channels`` and their ``maps.json``."""
    maps = []
    for c in channels:
        proj, patch, box, position = tiles[b, c]
        rel = f"{image_dir(n)}/{stem}/c{c:0{digits}d}.png"
        save(rel, proj)
        save(rel[:-4] + "-patch.png", patch)
        maps.append({"channel": c, "activation": float(values[b, c]), "position": position,
                     "box": box, "file": rel, "patch": rel[:-4] + "-patch.png"})
    doc = {"image": n, "layer": name, "maps": maps}
    save(f"{image_dir(n)}/{stem}/maps.json", doc)
    return doc


def _phase(progress, name: str):
    if progress is None:
        return None
    return lambda phase, done, total: progress(f"{phase} {name}", done, total)


# --------------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------------
def image_dir(index: int) -> str:
    return f"data/images/i{index:05d}"


def predictions(model: nn.Module, data, indices: Sequence[int], batch_size: int) -> dict[int, list[dict]]:
    """The top-5 classes (index, name, probability) of each image."""
    meta = meta_of(model)
    found = {}
    with eval_mode(model), torch.no_grad():
        for first in range(0, len(indices), batch_size):
            group = list(indices[first:first + batch_size])
            x = torch.stack([data.image(n) for n in group]).to(model_device(model))
            out = model(x)
            if not isinstance(out, torch.Tensor) or out.dim() != 2:
                raise IntrospectError("the model's output is not N x classes scores; the report needs a classifier")
            p = torch.softmax(out.float(), dim=1).cpu()
            values, classes = p.topk(min(TOP_CLASSES, p.shape[1]), dim=1)
            for n, vs, cs in zip(group, values.tolist(), classes.tolist()):
                found[n] = [{"index": c, "name": meta.class_name(c), "prob": v} for c, v in zip(cs, vs)]
    return found


def image_unit(model: nn.Module, data, n: int, top5: list[dict], save, save_dir) -> dict:
    """Image ``n``: its picture, predictions and the Fig. 7 occlusion panels for the top class
    (``introspect.occlusion``, saved as ``introspect occlusion`` writes them)."""
    meta = meta_of(model)
    x = data.image(n)
    folder = image_dir(n)
    save(f"{folder}/input.png", image_tile(x.float().cpu(), None, meta.mean, meta.std))
    result = method("occlusion")(model, x[None], targets=[top5[0]["index"]])
    files = save_dir(f"{folder}/occlusion", result.save)
    doc = {"index": n, "name": data.names[n], "label": data.labels[n] if n < len(data.labels) else None,
           "predictions": top5, "occlusion": sorted(f for f in files if f.endswith(".png")),
           "occlusion_summary": {k: v for k, v in result.to_dict().items()
                                 if k in ("size", "stride", "fill", "positions", "clean_label", "targets", "layers",
                                          "mode")}}
    save(f"{folder}/image.json", doc)
    return doc


def filters_unit(model: nn.Module, data, batch_size: int, save_dir, progress=None) -> dict:
    """Fig. 6 of the first convolution (``introspect.first_layer_filters``), saved as
    ``introspect filters`` writes it."""
    prog = None if progress is None else (lambda phase, done, total: progress("filters", done, total))
    result = method("first_layer_filters")(model, data.dataset, batch_size=batch_size, progress=prog)
    files = save_dir("data/filters", result.save)
    doc = result.to_dict()
    doc["files"] = files
    return doc


__all__ = [
    "check_methods",
    "filters_unit",
    "image_unit",
    "layer_doc",
    "method",
    "mine_layer",
    "predictions",
    "project_layer",
]
