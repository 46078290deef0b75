"""The pages of a report: plain HTML that opens from ``file://``, built from the records of
:mod:`introspect_report.compute` (so a rerun rebuilds every page from the data beside them).

Layout (every page is one folder deep except the index, so links are ``../``-relative)::

    index.html  filters.html  layers/<layer>.html  maps/<layer>-c0017.html  images/i00003.html
    assets/style.css  assets/site.js  data/...  report.json
"""
from __future__ import annotations

from collections.abc import Callable
from html import escape

from introspect_report.assets import SCRIPT, STYLE
from introspect_report.compute import image_dir, map_file, thumb_file

Write = Callable[[str, str], None]


def layer_page(stem: str) -> str:
    return f"layers/{stem}.html"


def map_page(stem: str, channel: int, digits: int) -> str:
    return f"maps/{stem}-c{channel:0{digits}d}.html"


def image_page(index: int) -> str:
    return f"images/i{index:05d}.html"


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _page(title: str, body: str, depth: int, nav: str = "") -> str:
    up = "../" * depth
    return (f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{escape(title)} · introspect report</title>\n"
            f"<link rel=\"icon\" href=\"data:,\">\n"
            f"<link rel=\"stylesheet\" href=\"{up}assets/style.css\">\n"
            f"<script src=\"{up}assets/site.js\" defer></script>\n</head>\n<body>\n"
            f"<header><span class=\"brand\">introspect report</span>"
            f"<a href=\"{up}index.html\">index</a><a href=\"{up}filters.html\">filters</a>{nav}</header>\n"
            f"<main>\n<h1>{escape(title)}</h1>\n{body}\n</main>\n</body>\n</html>\n")


def write_assets(write: Write) -> None:
    write("assets/style.css", STYLE)
    write("assets/site.js", SCRIPT)


# --------------------------------------------------------------------------------------------------
# index
# --------------------------------------------------------------------------------------------------
def index_html(site: dict) -> str:
    info = site["model"]
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in [
        ("architecture", info["architecture"]), ("weights", info["weights"]),
        ("parameters", f"{info['parameters']:,}"), ("input size", " x ".join(map(str, info["input_size"]))),
        ("preprocessing", f"mean {info['mean']}, std {info['std']}"),
        ("classes", f"{len(info['classes'])}: {', '.join(info['classes'][:20])}"
                    f"{' ...' if len(info['classes']) > 20 else ''}" if info["classes"] else "no names"),
        ("data", f"{site['data']['images']} images from {site['data']['source']}"),
    ])
    reported = {layer["layer"]: layer for layer in site["layers"]}
    table = []
    for r in site["layer_table"]:
        layer = reported.get(r["name"])
        name = escape(r["name"])
        cell = f"<a href=\"{layer_page(layer['stem'])}\">{name}</a>" if layer else name
        shape = "x".join(map(str, r["output_shape"])) if r["output_shape"] else "-"
        rf = "image" if r["is_global"] else ("x".join(map(str, r["rf_size"])) if r["rf_size"] else "-")
        stride = "-" if r["is_global"] or not r["rf_stride"] else str(r["rf_stride"][0])
        table.append(f"<tr><td>{cell}</td><td>{escape(r['alias'] or '')}</td><td>{escape(r['type'])}</td>"
                     f"<td>{shape}</td><td class=\"num\">{rf}</td><td class=\"num\">{stride}</td></tr>")
    layers = "".join(
        f"<li><a href=\"{layer_page(layer['stem'])}\">{escape(layer['name'])}</a> "
        f"<span class=\"muted\">({len(layer['maps'])} maps, {layer['dead']} dead, top-{layer['k']})</span></li>"
        for layer in site["layers"])
    images = "".join(
        f"<figure><a href=\"{image_page(im['index'])}\"><img class=\"tile\" loading=\"lazy\" alt=\"\" "
        f"src=\"{image_dir(im['index'])}/input.png\"></a><figcaption>{escape(im['name'])}<br>"
        f"<span class=\"muted\">{escape(im['predictions'][0]['name'])}</span></figcaption></figure>"
        for im in site["images"])
    skipped = ""
    if site["data"]["skipped"]:
        skipped = ("<h2>Skipped files</h2><ul>" + "".join(f"<li>{escape(s)}</li>" for s in site["data"]["skipped"])
                   + "</ul>")
    versions = ", ".join(f"{k} {v}" for k, v in site["versions"].items())
    body = (f"<h2>Model</h2><table>{rows}</table>\n<h2>Reported layers</h2><ul>{layers}</ul>\n"
            f"<p><a href=\"filters.html\">First-layer filters (Fig. 6)</a></p>\n"
            f"<h2>Images</h2><div class=\"images\">{images}</div>\n{skipped}\n"
            f"<h2>Layers</h2><table><tr><th>layer</th><th>alias</th><th>type</th><th>output</th>"
            f"<th>receptive field</th><th>stride</th></tr>{''.join(table)}</table>\n"
            f"<h2>How this site was made</h2><p><code>{escape(site['command'])}</code></p>"
            f"<p class=\"muted\">{escape(versions)}; fingerprint {site['fingerprint'][:16]}; "
            f"built {escape(site['built'])}</p>")
    return _page(f"{info['architecture']} ({info['weights']})", body, 0)


# --------------------------------------------------------------------------------------------------
# layers and maps
# --------------------------------------------------------------------------------------------------
def layer_html(layer: dict, prev: dict | None, nxt: dict | None) -> str:
    stem, digits = layer["stem"], layer["digits"]
    cards = []
    for m in layer["maps"]:
        c = m["channel"]
        act = m["top"][0]["activation"] if m["top"] else None
        dead = act is None or act <= 0
        tag = "<span class=\"tag\">dead</span>" if dead else escape(_fmt(act))
        act_attr = f"{act:.6g}" if act is not None else "-Infinity"
        title = " title=\"dead: never active over the data\"" if dead else ""
        cards.append(f"<a class=\"card{' dead' if dead else ''}\" href=\"../{map_page(stem, c, digits)}\" "
                     f"data-index=\"{c}\" data-activation=\"{act_attr}\"{title}><img loading=\"lazy\" alt=\"\" "
                     f"src=\"../{thumb_file(stem, c, digits)}\">{c} · {tag}</a>")
    pager = _pager(prev and (f"../{layer_page(prev['stem'])}", prev["name"]),
                   nxt and (f"../{layer_page(nxt['stem'])}", nxt["name"]), ("../index.html", "index"))
    body = (f"{pager}<p class=\"muted\">{len(layer['maps'])} feature maps, {layer['dead']} dead (never active over "
            f"the {layer['images_seen']} images); each thumbnail is the deconvnet projection of the map's strongest "
            f"activation. Receptive field {'x'.join(map(str, layer['field']['size']))}, stride "
            f"{layer['field']['stride'][0]}. <a href=\"../data/layers/{stem}/top.json\">top.json</a></p>\n"
            f"<div class=\"toolbar\">sort by <button type=\"button\" data-sort=\"index\" aria-pressed=\"true\">"
            f"index</button><button type=\"button\" data-sort=\"activation\" aria-pressed=\"false\">activation"
            f"</button><span class=\"muted\"><kbd>arrows</kbd> move, <kbd>Enter</kbd> opens a map, "
            f"<kbd>n</kbd>/<kbd>p</kbd> next/previous layer</span></div>\n"
            f"<div class=\"grid\" id=\"maps\" data-sort=\"index\">\n" + "\n".join(cards) + "\n</div>")
    return _page(f"Layer {layer['name']}", body, 1)


def _pager(prev, nxt, up) -> str:
    parts = []
    if prev:
        parts.append(f"<a rel=\"prev\" href=\"{prev[0]}\">&larr; {escape(prev[1])}</a>")
    parts.append(f"<a rel=\"up\" href=\"{up[0]}\">&uarr; {escape(up[1])}</a>")
    if nxt:
        parts.append(f"<a rel=\"next\" href=\"{nxt[0]}\">{escape(nxt[1])} &rarr;</a>")
    return f"<nav class=\"pager\">{''.join(parts)}</nav>\n"


def map_html(layer: dict, j: int, pages: set[int]) -> str:
    stem, digits, maps = layer["stem"], layer["digits"], layer["maps"]
    m = maps[j]
    c = m["channel"]
    prev = maps[j - 1]["channel"] if j > 0 else None
    nxt = maps[j + 1]["channel"] if j + 1 < len(maps) else None
    pager = _pager(prev is not None and (f"../{map_page(stem, prev, digits)}", f"map {prev}"),
                   nxt is not None and (f"../{map_page(stem, nxt, digits)}", f"map {nxt}"),
                   (f"../{layer_page(stem)}", f"layer {layer['name']}"))
    rows = []
    for e in m["top"]:
        r, n = e["rank"], e["image"]
        name = escape(e.get("image_name", f"image {n}"))
        link = f"<a href=\"../{image_page(n)}\">{name}</a>" if n in pages else name
        rows.append(f"<tr data-rank=\"{r}\" data-image=\"{n}\" data-activation=\"{e['activation']!r}\">"
                    f"<td class=\"num\">{r + 1}</td>"
                    f"<td><span class=\"pair\"><img alt=\"projection\" "
                    f"src=\"../{map_file(stem, c, r, digits, 'proj')}\">"
                    f"<img alt=\"patch\" src=\"../{map_file(stem, c, r, digits, 'patch')}\"></span></td>"
                    f"<td class=\"num\">{_fmt(e['activation'])}</td><td>{link}</td>"
                    f"<td class=\"num\">{tuple(e['position'])}</td><td class=\"num\">{tuple(e['box'])}</td></tr>")
    dead = not m["top"] or m["top"][0]["activation"] <= 0
    note = " <strong class=\"dead\">dead: never active over the data</strong>" if dead else ""
    body = (f"{pager}<p class=\"muted\">The {len(m['top'])} images where map {c} of {escape(layer['name'])} is "
            f"strongest (one entry per image), each as the deconvnet projection of that activation beside the "
            f"image's receptive-field patch (the paper's Fig. 2).{note}</p>\n"
            f"<table id=\"top\"><tr><th>rank</th><th>projection | patch</th><th>activation</th><th>image</th>"
            f"<th>position (y, x)</th><th>box (y0, x0, y1, x1)</th></tr>{''.join(rows)}</table>")
    return _page(f"{layer['name']} map {c}", body, 1)


# --------------------------------------------------------------------------------------------------
# images and filters
# --------------------------------------------------------------------------------------------------
_PANELS = {"a": "(a) input, occluder at the lowest p", "b": "(b) total activation", "c": "(c) projection",
           "d": "(d) probability of the class", "e": "(e) most probable class"}


def image_html(image: dict, layers: list[dict], prev: int | None, nxt: int | None) -> str:
    n = image["index"]
    pager = _pager(prev is not None and (f"../{image_page(prev)}", "previous image"),
                   nxt is not None and (f"../{image_page(nxt)}", "next image"), ("../index.html", "index"))
    preds = "".join(f"<tr><td class=\"num\">{i + 1}</td><td>{escape(p['name'])}</td>"
                    f"<td class=\"num\">{p['prob']:.3f}</td></tr>" for i, p in enumerate(image["predictions"]))
    label = f"<p>true class: <strong>{escape(image['label'])}</strong></p>" if image.get("label") else ""
    folder = image_dir(n)
    panels = "".join(f"<figure><img class=\"panel\" alt=\"{escape(f)}\" src=\"../{folder}/occlusion/{escape(f)}\">"
                     f"<figcaption>{_PANELS.get(f[0], '')} <span class=\"muted\">{escape(f)}</span></figcaption>"
                     f"</figure>" for f in image["occlusion"] if f != "figure.png")
    occ = image.get("occlusion_summary", {})
    size = occ.get("size", ["?"])[0]
    stride = occ.get("stride", ["?"])[0]
    sections = []
    for layer in layers:
        maps = image["layers"].get(layer["layer"])
        if maps is None:
            continue
        cards = "".join(
            f"<a href=\"../{map_page(layer['stem'], m['channel'], layer['digits'])}\"><span class=\"pair\">"
            f"<img loading=\"lazy\" alt=\"projection\" src=\"../{m['file']}\"><img loading=\"lazy\" alt=\"patch\" "
            f"src=\"../{m['patch']}\"></span><br>map {m['channel']} · {_fmt(m['activation'])}</a>"
            for m in maps["maps"])
        sections.append(f"<h3><a href=\"../{layer_page(layer['stem'])}\">{escape(layer['name'])}</a></h3>"
                        f"<div class=\"strip\">{cards}</div>")
    body = (f"{pager}<div class=\"images\"><figure><img class=\"input\" alt=\"input\" src=\"../{folder}/input.png\">"
            f"<figcaption>{escape(image['name'])}</figcaption></figure>"
            f"<div>{label}<h2>Top-{len(image['predictions'])} predictions</h2><table id=\"predictions\"><tr><th>#</th>"
            f"<th>class</th><th>probability</th></tr>{preds}</table></div></div>\n"
            f"<h2>Occlusion (Fig. 7) for {escape(image['predictions'][0]['name'])}</h2>"
            f"<p class=\"muted\">A grey square of side {size} slid with stride {stride}: (a) the input, (b) the total "
            f"activation of the strongest map of the last convolution, (c) its projection, (d) the probability of "
            f"the top class, (e) the most probable class, at each occluder position. Arrays: "
            f"<a href=\"../{folder}/occlusion/result.json\">result.json</a>.</p>"
            f"<div class=\"images\">{panels}</div>\n"
            f"<h2>Strongest feature maps</h2>{''.join(sections)}")
    return _page(image["name"], body, 1)


def filters_html(filters: dict | None) -> str:
    if filters is None:
        return _page("First-layer filters", "<p>No filters were computed.</p>", 0)
    dead = ", ".join(map(str, filters["dead_filters"])) or "none"
    body = (f"<p class=\"muted\">Layer {escape(filters['alias'] or filters['layer'])}: {filters['filters']} filters "
            f"{'x'.join(map(str, filters['kernel_size']))}, stride {filters['stride'][0]} (the paper's Fig. 6). "
            f"Data: {filters['images_seen']} images. <a href=\"data/filters/report.csv\">report.csv</a>, "
            f"<a href=\"data/filters/result.json\">result.json</a></p>"
            f"<table><tr><th>dead filters</th><td>{filters['dead_count']} ({escape(dead)})</td></tr>"
            f"<tr><th>mean high-frequency energy</th><td>{_fmt(filters['mean_high_frequency'])}</td></tr>"
            f"<tr><th>mean aliasing energy</th><td>{_fmt(filters['mean_aliasing'])}</td></tr></table>"
            f"<h2>Filters</h2><img class=\"figure\" alt=\"filters\" src=\"data/filters/filters.png\">"
            f"<h2>Power spectra</h2><img class=\"figure\" alt=\"spectra\" src=\"data/filters/spectrum.png\">")
    return _page("First-layer filters", body, 0)


def write_pages(site: dict, write: Write) -> list[str]:
    """Every page of ``site``; returns their paths."""
    pages = []

    def page(rel: str, text: str) -> None:
        write(rel, text)
        pages.append(rel)

    write_assets(write)
    page("index.html", index_html(site))
    page("filters.html", filters_html(site["filters"]))
    layers = site["layers"]
    shown = {im["index"] for im in site["images"]}
    for i, layer in enumerate(layers):
        page(layer_page(layer["stem"]), layer_html(layer, layers[i - 1] if i else None,
                                                   layers[i + 1] if i + 1 < len(layers) else None))
        for j, m in enumerate(layer["maps"]):
            page(map_page(layer["stem"], m["channel"], layer["digits"]), map_html(layer, j, shown))
    images = site["images"]
    for i, image in enumerate(images):
        page(image_page(image["index"]), image_html(image, layers, images[i - 1]["index"] if i else None,
                                                    images[i + 1]["index"] if i + 1 < len(images) else None))
    return pages


__all__ = ["image_page", "layer_html", "layer_page", "map_page", "write_pages"]
