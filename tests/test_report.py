"""``introspect.report``: the site's links, data and reruns, against independent computations."""
from __future__ import annotations

import json
import os
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
import torch

import introspect
from conftest import REPORT_SITE
from introspect.cli import bundled_image_dir
from introspect.images import ImageFolderDataset, Preprocess, find_images

LAYERS, K, IMAGES = REPORT_SITE["layers"], REPORT_SITE["k"], REPORT_SITE["images"]


@pytest.fixture(scope="module")
def model():
    return introspect.load_model(None, device="cpu")


@pytest.fixture(scope="module")
def site(report_site):
    """The session's site of the bundled model (``conftest.report_site``, shared with the browser tests)."""
    return report_site


def data(model):
    return ImageFolderDataset(bundled_image_dir(), Preprocess.from_meta(introspect.meta_of(model)))


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("href", "src") and value is not None:
                self.links.append(value)


def links_of(page: Path) -> list[str]:
    parser = Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.links


def test_every_href_and_src_resolves_to_a_file_of_the_site(site):
    root = site.out.resolve()
    pages = sorted(root.rglob("*.html"))
    assert len(pages) == len(site.pages) == 2 + len(LAYERS) + (16 + 64) + IMAGES
    checked = 0
    for page in pages:
        for link in links_of(page):
            if link.startswith("data:"):
                continue
            parts = urlsplit(link)
            assert not parts.scheme and not parts.netloc, f"{page.name} links outside the site: {link}"
            target = (page.parent / unquote(parts.path)).resolve()
            assert target.is_relative_to(root), f"{page.name}: {link} leaves the site"
            assert target.is_file(), f"{page.relative_to(root)}: {link} does not exist"
            checked += 1
    assert checked > 1000


def test_manifest_lists_every_page_and_file(site):
    root = site.out
    manifest = json.loads((root / "report.json").read_text())
    on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                     if p.is_file() and p.relative_to(root).as_posix() != ".introspect-manifest.json")
    assert sorted(manifest["files"]) == on_disk == sorted(site.files)
    assert sorted(manifest["pages"]) == sorted(p for p in on_disk if p.endswith(".html"))
    assert [m["name"] for m in manifest["layers"]] == LAYERS
    assert [m["index"] for m in manifest["images"]] == list(range(IMAGES))
    assert manifest["generator"] == "introspect report" and len(manifest["fingerprint"]) == 64
    assert [p.name for p in root.parent.iterdir()] == ["site"]                   # no staging or lock left
    assert sorted(json.loads((root / ".introspect-manifest.json").read_text())["files"]) == sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()
        and p.relative_to(root).as_posix() != ".introspect-manifest.json")  # one introspect output folder


def brute_force_top(model, layer: str, k: int):
    """Per map, the k images with the largest activation anywhere in the map (a loop, no top_k)."""
    x = torch.stack([data(model)[i][0] for i in range(len(data(model)))])
    with introspect.attach(model, [layer]) as rec, torch.no_grad():
        model(x)
    peak = rec[layer].flatten(2).amax(dim=2)        # (N, C)
    tops = []
    for c in range(peak.shape[1]):
        order = sorted(range(peak.shape[0]), key=lambda n: (-float(peak[n, c]), n))[:k]
        tops.append([(n, float(peak[n, c])) for n in order])
    return tops


@pytest.mark.parametrize("layer", LAYERS)
def test_top_k_in_the_site_equals_top_k_and_a_brute_force_ranking(site, model, layer):
    doc = json.loads((site.out / "data" / "layers" / layer / "top.json").read_text())
    reference = introspect.top_k(model, data(model), layer=layer, k=K, project=False)
    assert doc["method"] == "top_k" and doc["k"] == K and doc["images_seen"] == 10
    assert [m["channel"] for m in doc["maps"]] == reference.channels.tolist()
    ranked = [[e["image"] for e in m["top"]] for m in doc["maps"]]
    assert ranked == reference.image_index.tolist()
    values = np.array([[e["activation"] for e in m["top"]] for m in doc["maps"]])
    np.testing.assert_allclose(values, reference.activation.numpy(), rtol=1e-6)
    assert [[e["position"] for e in m["top"]] for m in doc["maps"]] == reference.position.tolist()
    brute = brute_force_top(model, doc["layer"], K)
    assert ranked == [[n for n, _ in top] for top in brute]
    np.testing.assert_allclose(values, [[v for _, v in top] for top in brute], rtol=1e-5, atol=1e-6)
    names = [p.name for p in find_images(bundled_image_dir())]
    assert all(e["image_name"] == names[e["image"]] for m in doc["maps"] for e in m["top"])


def test_map_pages_show_the_ranking_of_top_json(site):
    doc = json.loads((site.out / "data" / "layers" / "conv5" / "top.json").read_text())
    for m in doc["maps"][:8]:
        page = (site.out / "maps" / f"conv5-c{m['channel']:04d}.html").read_text()
        rows = [(int(r), int(n)) for r, n in
                __import__("re").findall(r'data-rank="(\d+)" data-image="(\d+)"', page)]
        assert rows == [(e["rank"], e["image"]) for e in m["top"]]


def test_projection_tiles_are_the_deconvnet_projection_of_each_winner(site, model):
    """The rank-0 tile of a map equals introspect.project of that image and map, cropped and scaled."""
    from PIL import Image

    doc = json.loads((site.out / "data" / "layers" / "conv5" / "top.json").read_text())
    ds = data(model)
    for m in doc["maps"][:4]:
        entry = m["top"][0]
        x = ds[entry["image"]][0]
        res = introspect.project(model, x[None], layer="conv5", channels=[m["channel"]])
        y0, x0, y1, x1 = entry["box"]
        crop = res.projections[0, :, y0:y1, x0:x1]
        expected = np.round(np.clip(crop.numpy() / (2 * np.abs(crop.numpy()).max()) + 0.5, 0, 1) * 255)
        tile = np.asarray(Image.open(site.out / f"data/layers/conv5/top/c{m['channel']:04d}-r0.png"))
        assert tile.shape[:2] == (y1 - y0, x1 - x0)
        np.testing.assert_allclose(tile.transpose(2, 0, 1).astype(float), expected, atol=1)


def test_image_pages_hold_predictions_and_occlusion_arrays(site, model):
    ds = data(model)
    for n in range(IMAGES):
        folder = site.out / "data" / "images" / f"i{n:05d}"
        doc = json.loads((folder / "image.json").read_text())
        x = ds[n][0][None]
        with torch.no_grad():
            p = torch.softmax(model(x), dim=1)[0]
        order = sorted(range(10), key=lambda c: -float(p[c]))[:5]
        assert [q["index"] for q in doc["predictions"]] == order
        assert [q["name"] for q in doc["predictions"]] == [introspect.meta_of(model).classes[c] for c in order]
        np.testing.assert_allclose([q["prob"] for q in doc["predictions"]], p[order].numpy(), rtol=1e-5)
        written = json.loads((folder / "occlusion" / "result.json").read_text())
        assert written["method"] == "occlusion" and written["targets"][0]["index"] == order[0]
        prob = np.load(folder / "occlusion" / "prob.npy")
        prob = prob[0] if prob.ndim == 3 else prob          # targets x positions down x across
        # panel (d) by brute force at a few positions: the top class's probability with the square grey
        size, stride = written["size"][0], written["stride"][0]
        grey = torch.tensor([(0.5 - m) / s for m, s in zip(introspect.meta_of(model).mean,
                                                            introspect.meta_of(model).std)]).view(3, 1, 1)
        for iy, ix in [(0, 0), (prob.shape[0] // 2, prob.shape[1] - 1)]:
            occluded = x.clone()
            y, xx = iy * stride, ix * stride
            occluded[0, :, y:y + size, xx:xx + size] = grey
            with torch.no_grad():
                expected = torch.softmax(model(occluded), dim=1)[0, order[0]]
            assert prob[iy, ix] == pytest.approx(float(expected), abs=1e-4)
        html = (site.out / "images" / f"i{n:05d}.html").read_text()
        assert doc["predictions"][0]["name"] in html and "d_prob_" in html


def test_filters_page_data_is_what_introspect_filters_writes(site, model):
    weights = np.load(site.out / "data" / "filters" / "filters.npy")
    np.testing.assert_array_equal(weights, model.features[0].weight.detach().numpy())
    assert "dead filters" in (site.out / "filters.html").read_text()


def test_rerun_reuses_the_same_fingerprint_adds_layers_and_force_redoes(site, model, tmp_path):
    out = tmp_path / "site"
    first = introspect.report(model, out=out, layers=["conv1"], k=2, images=1)
    assert first.reused == []
    inode = (out / "data/layers/conv1/top.json").stat().st_ino
    again = introspect.report(model, out=out, layers=["conv1", "conv2"], k=2, images=2)
    assert sorted(again.reused) == ["filters", "image:0", "image:0:features.0", "layer:features.0"]
    assert (out / "data/layers/conv1/top.json").stat().st_ino == inode  # linked, not recomputed
    assert (out / "layers/conv2.html").is_file() and (out / "images/i00001.html").is_file()
    forced = introspect.report(model, out=out, layers=["conv1"], k=2, images=1, force=True)
    assert forced.reused == []
    assert not (out / "layers/conv2.html").exists()       # the whole folder was replaced: no stale page
    other_k = introspect.report(model, out=out, layers=["conv1"], k=3, images=1)
    assert other_k.reused == [] and other_k.fingerprint != forced.fingerprint
    changed = introspect.load_model(None, device="cpu")
    with torch.no_grad():
        changed.features[0].weight.mul_(1.5)
    other_model = introspect.report(changed, out=out, layers=["conv1"], k=3, images=1)
    assert other_model.reused == []                        # never mixes results of different models


def test_interrupted_build_leaves_the_previous_site_untouched(model, tmp_path):
    out = tmp_path / "site"
    introspect.report(model, out=out, layers=["conv1"], k=2, images=1)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def stop(phase, done, total):
        if phase == "images":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        introspect.report(model, out=out, layers=["conv1", "conv3"], k=2, images=2, progress=stop)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir()] == ["site"]


def test_default_layers(model):
    from introspect_report.data import default_layers

    assert default_layers(model) == ["features.0", "features.4", "features.8", "features.10", "features.12"]
    import torchvision

    assert default_layers(torchvision.models.resnet18()) == ["layer1", "layer2", "layer3", "layer4"]
    vgg = default_layers(torchvision.models.vgg11())
    assert vgg == ["features.0", "features.3", "features.8", "features.13", "features.18"]


def test_a_missing_method_plugin_is_one_line(model, tmp_path):
    pm = introspect.get_plugin_manager()
    plugin = pm.get_plugin("occlusion")
    pm.unregister(plugin)
    try:
        expected = r"introspect report \(through the plugin introspect_occlusion .*needs the method 'occlusion'"
        with pytest.raises(introspect.IntrospectError, match=expected) as err:
            introspect.report(model, out=tmp_path / "site")
        assert "\n" not in str(err.value)
    finally:
        pm.register(plugin, name="occlusion")
    assert not (tmp_path / "site").exists()


def test_layer_that_does_not_run_is_one_line_and_writes_nothing(tmp_path):
    class Unused(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.spare = torch.nn.Conv2d(4, 4, 3)
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.conv(x).amax(dim=(2, 3)))

    with pytest.raises(introspect.IntrospectError, match="layer 'spare' did not run"):
        introspect.report(Unused(), torch.randn(4, 3, 16, 16), out=tmp_path / "site", layers=["spare"])
    assert not (tmp_path / "site").exists()
    assert os.listdir(tmp_path) == []


def test_a_second_run_into_the_same_out_fails_at_once(model, tmp_path):
    from introspect_report.store import SiteFolder

    with SiteFolder(tmp_path / "site"):
        with pytest.raises(introspect.IntrospectError, match=rf"another introspect run \(process {os.getpid()}\)"):
            introspect.report(model, out=tmp_path / "site", layers=["conv1"], k=2, images=1)
        assert not (tmp_path / "site").exists()
