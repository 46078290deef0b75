"""Top-k mining (introspect_deconv.top): exact against a brute-force pass, projections, patches."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

import conftest
import introspect
from introspect.core import attach
from introspect.core.attach import same_snapshot, snapshot
from introspect.errors import IntrospectError
from introspect_deconv import TopK, project, top_k
from introspect_deconv.top import RunningTopK

pytestmark = pytest.mark.usefixtures("one_thread")


def small_zfnet():
    return conftest.small_zfnet(widths=(16, 24, 32, 32, 12), fc=32, pool5_size=2, num_classes=5)


def data_with_ties(n=13, size=64):
    """Random images, two of them repeated (exact ties between different images)."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(n, 3, size, size, generator=gen)
    x[7] = x[2]
    x[11] = x[2]
    x[12] = x[5]
    return x


def brute_force(model, data, layer, k, batch_size):
    """Every activation of the data set in memory; per map the k best images (one entry per image,
    its first strongest position), ties to the earlier image. The forward passes use the same
    batches as the streaming pass (a convolution's last bits can depend on the batch size)."""
    parts = []
    with torch.no_grad(), attach(model, [layer]) as rec:
        for first in range(0, len(data), batch_size):
            rec.forward(data[first:first + batch_size], stop=True)
            parts.append(rec[layer])
    act = torch.cat(parts)                                # N x C x h x w, all of it
    n, c, h, w = act.shape
    out = []
    for ch in range(c):
        per_image = []
        for i in range(n):
            flat = act[i, ch].flatten().tolist()
            best = max(flat)
            pos = flat.index(best)                        # first occurrence
            per_image.append((-best, i, (pos // w, pos % w), best))
        per_image.sort(key=lambda t: (t[0], t[1]))
        out.append(per_image[:k])
    return out


@pytest.mark.parametrize("batch_size", [1, 4, 13])
def test_running_top_k_equals_brute_force(batch_size):
    model = small_zfnet()
    data = data_with_ties()
    top = top_k(model, data, layer="conv5", k=4, batch_size=batch_size, project=False)
    expected = brute_force(model, data, "features.12", 4, batch_size)
    assert top.images_seen == 13 and top.channels.tolist() == list(range(12))
    ties = 0
    for j, rows in enumerate(expected):
        assert top.image_index[j].tolist() == [r[1] for r in rows]
        assert top.position[j].tolist() == [list(r[2]) for r in rows]
        assert top.activation[j].tolist() == [r[3] for r in rows]
        ties += sum(1 for a, b in zip(rows, rows[1:]) if a[3] == b[3])
        assert len(set(top.image_index[j].tolist())) == 4   # one entry per image
    assert ties > 0, "the data must contain ties to check their order"


def test_channels_and_fewer_images_than_k():
    model = small_zfnet()
    data = data_with_ties()[:3]
    top = top_k(model, data, layer="conv5", k=5, channels=[7, 2], project=True)
    assert top.channels.tolist() == [2, 7]
    assert (top.image_index[:, 3:] == -1).all() and (top.image_index[:, :3] >= 0).all()
    assert torch.isinf(top.activation[:, 3:]).all()
    assert top.projections[:, 3:].abs().sum() == 0
    with pytest.raises(IntrospectError, match="0..11"):
        top_k(model, data, layer="conv5", channels=[12])
    with pytest.raises(IntrospectError, match="positive"):
        top_k(model, data, layer="conv5", k=0)
    with pytest.raises(IntrospectError, match=r"N x C x H x W, got shape \(3, 64, 64\).*x\[None\]"):
        top_k(model, data[0], layer="conv5")


def test_memory_stays_constant_while_streaming():
    running = RunningTopK(torch.arange(6), k=3)
    gen = torch.Generator().manual_seed(0)
    kept = []
    for batch in range(50):
        running.update(torch.randn(8, 6, 5, 5, generator=gen), first_image=batch * 8)
        kept.append((tuple(running.values.shape), tuple(running.images.shape), tuple(running.positions.shape)))
    assert set(kept) == {((6, 3), (6, 3), (6, 3, 2))}
    assert (running.values[:, :-1] >= running.values[:, 1:]).all()


def test_winners_are_projected_and_cut_like_single_projections():
    model = small_zfnet()
    data = data_with_ties()
    before = snapshot(model)
    top = top_k(model, data, layer="conv5", k=3, channels=[0, 4, 9], batch_size=5)
    assert same_snapshot(before, snapshot(model))
    assert top.method == "chain"
    assert top.projections.shape == (3, 3, 3, 64, 64)    # receptive field (139) > image: whole image
    for j in range(3):
        for r in range(3):
            n, c = int(top.image_index[j, r]), int(top.channels[j])
            single = project(model, data[n], layer="conv5", channels=[c])
            assert single.position[0].tolist() == top.position[j, r].tolist()
            torch.testing.assert_close(top.projections[j, r], single.projections[0], rtol=1e-4, atol=1e-7)
            torch.testing.assert_close(top.patches[j, r], data[n])


def test_windows_are_receptive_fields_when_smaller_than_the_image():
    torch.manual_seed(0)
    model = torchvision.models.vgg11().eval()
    data = torch.randn(6, 3, 64, 64)
    top = top_k(model, data, layer="features.3", k=2, channels=[1, 5])   # receptive field 8 x 8
    assert top.field.size == (8, 8) and top.projections.shape == (2, 2, 3, 8, 8)
    for j in range(2):
        for r in range(2):
            n, c = int(top.image_index[j, r]), int(top.channels[j])
            oy, ox = top.origins[j, r].tolist()
            y0, x0, y1, x1 = top.boxes[j, r].tolist()
            assert (max(oy, 0), max(ox, 0)) == (y0, x0)
            full = project(model, data[n], layer="features.3", channels=[c]).projections[0]
            assert full.abs().sum() > 0
            torch.testing.assert_close(top.projections[j, r, :, y0 - oy:y1 - oy, x0 - ox:x1 - ox],
                                       full[:, y0:y1, x0:x1], rtol=1e-4, atol=1e-7)
            assert float(top.projections[j, r].abs().sum()) == pytest.approx(float(full.abs().sum()), rel=1e-5)
            torch.testing.assert_close(top.patches[j, r, :, y0 - oy:y1 - oy, x0 - ox:x1 - ox], data[n, :, y0:y1, x0:x1])


def test_generic_path_gives_the_same_top_k():
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    data = torch.randn(5, 3, 48, 48)
    top = top_k(model, data, layer="layer2", k=2, channels=[3, 8])
    assert top.method == "autograd"
    for j in range(2):
        for r in range(2):
            n, c = int(top.image_index[j, r]), int(top.channels[j])
            single = project(model, data[n], layer="layer2", channels=[c])
            torch.testing.assert_close(top.projections[j, r], single.projections[0], rtol=1e-4, atol=1e-6)


def test_image_folder_and_progress(tmp_path):
    from PIL import Image

    from introspect.images import ImageFolderDataset, Preprocess

    rng = np.random.default_rng(0)
    for i in range(5):
        folder = tmp_path / ("cats" if i % 2 else "dogs")
        folder.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (70, 80, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    data = ImageFolderDataset(tmp_path, Preprocess((3, 64, 64)))
    calls = []
    top = introspect.top_k(small_zfnet(), data, layer="conv5", k=2, channels=[1], batch_size=2,
                           progress=lambda phase, done, total: calls.append((phase, done, total)))
    assert isinstance(top, TopK)
    assert [c for c in calls if c[0] == "mine"] == [("mine", 2, 5), ("mine", 4, 5), ("mine", 5, 5)]
    assert calls[-1][0] == "project" and calls[-1][1] == calls[-1][2]
    names = {int(n): top.image_names[int(n)] for n in top.image_index[0]}
    assert all(name.endswith(".png") for name in names.values())
    doc = top.to_dict()
    assert doc["maps"][0]["channel"] == 1
    assert doc["maps"][0]["top"][0]["image_name"] == names[int(top.image_index[0, 0])]
    files = top.save(tmp_path / "out")
    assert {p.name for p in files} >= {"top.npy", "input.npy", "top.json", "overview.png", "ch001.png"}
