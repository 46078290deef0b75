"""``first_layer_filters``: spectra against a brute-force DFT, dead filters against brute-force
convolution loops, the streaming pass, the filter grid, and the model left as found."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import introspect
from introspect.core.attach import same_snapshot, snapshot
from introspect.errors import IntrospectError
from introspect.images import ImageFolderDataset, Preprocess, load_images
from introspect.models import load_model
from introspect_filters.figure import DEAD, LIVE, filter_tiles, filters_picture, spectrum_picture
from introspect_filters.method import NEGLIGIBLE_NORM, NEVER_ACTIVE, first_layer_filters


def conv_net(weight: torch.Tensor, bias: torch.Tensor, stride=2, padding=0) -> nn.Module:
    """A small model whose first layer has exactly ``weight`` and ``bias``."""
    c_out, c_in, kh, kw = weight.shape
    conv = nn.Conv2d(c_in, c_out, (kh, kw), stride=stride, padding=padding)
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
    return nn.Sequential(conv, nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_out, 2))


def checkerboard(k: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")
    return (1 - 2 * ((y + x) % 2)).double()


def brute_force_fractions(w: np.ndarray, size, stride, cutoff):
    """Power spectrum by the DFT's double sum, then the band fractions by a loop over bins."""
    c_in, kh, kw = w.shape
    ph, pw = size
    power = np.zeros((ph, pw))
    for u in range(ph):
        for v in range(pw):
            for c in range(c_in):
                total = 0j
                for y in range(kh):
                    for x in range(kw):
                        total += w[c, y, x] * np.exp(-2j * np.pi * (u * y / ph + v * x / pw))
                power[u, v] += abs(total) ** 2
    hf = alias = 0.0
    for u in range(ph):
        for v in range(pw):
            fy = u / ph - 1 if u / ph >= 0.5 else u / ph
            fx = v / pw - 1 if v / pw >= 0.5 else v / pw
            if math.hypot(fy, fx) > cutoff:
                hf += power[u, v]
            if abs(fy) > 0.5 / stride[0] or abs(fx) > 0.5 / stride[1]:
                alias += power[u, v]
    return power, hf / power.sum(), alias / power.sum()


# --------------------------------------------------------------------------------------------------
# spectra
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stride", [1, 2, 4])
def test_constant_filter_has_no_high_frequency_or_aliasing(stride):
    w = torch.ones(2, 3, 7, 7)
    w[1] = -0.3
    result = first_layer_filters(conv_net(w, torch.zeros(2), stride=stride))
    assert float(result.high_frequency.abs().max()) < 1e-12  # zero up to the FFT's rounding
    assert float(result.aliasing.abs().max()) < 1e-12
    assert result.nyquist == (0.5 / stride, 0.5 / stride)


def test_checkerboard_has_its_energy_at_nyquist():
    w = torch.stack([checkerboard(7).expand(3, 7, 7), torch.ones(3, 7, 7)]).float()
    r2 = first_layer_filters(conv_net(w, torch.zeros(2), stride=2))
    # by hand: the 1-D DFT of (-1)^n over 7 samples has |X_k|^2 = 1 / cos^2(pi k / 7); the bins with
    # |f| <= 1/4 are k = 0, +-1, so the share below the Nyquist of stride 2 is ((1 + 2 / cos^2(pi/7)) / 49)^2
    below = ((1 + 2 / math.cos(math.pi / 7) ** 2) / 49) ** 2
    assert abs(float(r2.aliasing[0]) - (1 - below)) < 1e-6
    assert float(r2.aliasing[0]) > 0.99 and float(r2.aliasing[1]) < 1e-12
    assert abs(float(r2.high_frequency[0]) - (1 - below)) < 1e-6  # the same bins are within radius 1/4
    even = first_layer_filters(conv_net(checkerboard(8).expand(1, 3, 8, 8).float(), torch.zeros(1), stride=2))
    assert abs(float(even.aliasing[0]) - 1.0) < 1e-9 and abs(float(even.high_frequency[0]) - 1.0) < 1e-9
    shifted = even.spectrum[0]
    assert float(shifted[0, 0]) == pytest.approx(float(shifted.sum()))  # all at (-1/2, -1/2), the corner
    assert float(first_layer_filters(conv_net(w, torch.zeros(2), stride=1)).aliasing.abs().max()) == 0.0


@pytest.mark.parametrize("fft_size", [None, 9, (6, 8)])
def test_spectral_energies_match_a_brute_force_dft(fft_size):
    torch.manual_seed(1)
    w = torch.randn(3, 2, 5, 5)
    w[2] += 0.8  # a filter with a strong DC part
    net = conv_net(w, torch.zeros(3), stride=(2, 3))
    result = first_layer_filters(net, fft_size=fft_size, hf_cutoff=0.3)
    size = (5, 5) if fft_size is None else ((fft_size, fft_size) if isinstance(fft_size, int) else fft_size)
    assert tuple(result.spectrum.shape[-2:]) == size and result.nyquist == (0.25, 0.5 / 3)
    for i in range(3):
        power, hf, alias = brute_force_fractions(w[i].double().numpy(), size, (2, 3), 0.3)
        assert abs(float(result.high_frequency[i]) - hf) < 1e-6
        assert abs(float(result.aliasing[i]) - alias) < 1e-6
        shifted = np.fft.fftshift(power)
        np.testing.assert_allclose(result.spectrum[i].numpy(), shifted, rtol=1e-5, atol=1e-5)
        # Parseval: the spectrum holds Ph * Pw times the filter's energy
        assert float(result.spectrum[i].double().sum()) == pytest.approx(size[0] * size[1] * float(w[i].square().sum()),
                                                                          rel=1e-5)
    assert result.freq_y.tolist() == pytest.approx(np.fft.fftshift(np.fft.fftfreq(size[0])).tolist())


# --------------------------------------------------------------------------------------------------
# dead filters
# --------------------------------------------------------------------------------------------------
def test_zero_and_tiny_filters_are_dead_by_norm():
    torch.manual_seed(2)
    w = torch.randn(6, 3, 5, 5)
    w[0] = 0.0
    w[1] *= 1e-3
    w[2] *= 0.2  # small, but above 5% of the median
    result = first_layer_filters(conv_net(w, torch.zeros(6)))
    norms = np.sqrt((w.double().numpy() ** 2).reshape(6, -1).sum(1))
    np.testing.assert_allclose(result.norm.numpy(), norms, rtol=1e-6)
    limit = 0.05 * np.median(norms)
    expected = [NEGLIGIBLE_NORM if n < limit or n == 0 else "" for n in norms]
    assert result.reasons == expected == [NEGLIGIBLE_NORM, NEGLIGIBLE_NORM, "", "", "", ""]
    assert result.dead.tolist() == [True, True, False, False, False, False] and result.dead_count == 2
    assert result.max_activation is None and result.images_seen == 0
    assert result.high_frequency[0] == 0 and result.aliasing[0] == 0
    # median = (0.2 n + n) / 2 for the two middle norms, so 0.4 of it (0.24 n) catches w[2] too
    assert first_layer_filters(conv_net(w, torch.zeros(6)), norm_fraction=0.4).dead.tolist()[:3] == [True] * 3


def brute_force_outputs(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, stride: int, padding: int) -> np.ndarray:
    """Every output of the convolution, by loops over images, filters and positions."""
    xp = np.pad(x.double().numpy(), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    wn, bn = w.double().numpy(), b.double().numpy()
    n, _, h, wd = xp.shape
    k = w.shape[-1]
    oh, ow = (h - k) // stride + 1, (wd - k) // stride + 1
    out = np.zeros((n, len(wn), oh, ow))
    for i in range(n):
        for f in range(len(wn)):
            for oy in range(oh):
                for ox in range(ow):
                    patch = xp[i, :, oy * stride:oy * stride + k, ox * stride:ox * stride + k]
                    out[i, f, oy, ox] = (patch * wn[f]).sum() + bn[f]
    return out


def test_never_active_against_a_brute_force_loop():
    torch.manual_seed(3)
    x = torch.rand(5, 3, 9, 9)  # non-negative images
    w = torch.randn(4, 3, 5, 5)
    w[0] = w[0].abs()
    w[3] = -w[3].abs()  # non-positive weights on non-negative images, no bias: never above 0
    b = torch.tensor([-1000.0, 0.0, 0.0, 0.0])
    raw = brute_force_outputs(x, w, torch.zeros(4), 2, 1)
    top = np.sort(raw[:, 1].ravel())
    b[1] = -float(top[-1] + top[-2]) / 2  # filter 1 fires at exactly one position of one image
    out = brute_force_outputs(x, w, b, 2, 1)
    assert (out[:, 1] > 0).sum() == 1
    result = first_layer_filters(conv_net(w, b, stride=2, padding=1), x, batch_size=2)
    np.testing.assert_allclose(result.max_activation.numpy(), out.max(axis=(0, 2, 3)), rtol=1e-5, atol=1e-4)
    expected = [NEVER_ACTIVE if (out[:, f] <= 0).all() else "" for f in range(4)]
    assert result.reasons == expected == [NEVER_ACTIVE, "", "", NEVER_ACTIVE]
    assert result.images_seen == 5 and result.dead_count == 2
    summary = result.to_dict()
    assert summary["never_active"] == 2 and summary["dead_filters"] == [0, 3]


def test_streaming_gives_the_same_max_as_one_big_batch(tiny_checkpoint, tmp_path):
    import skimage.data

    for name in ("astronaut", "coffee", "chelsea", "camera", "rocket"):
        Image.fromarray(getattr(skimage.data, name)()).save(tmp_path / f"{name}.png")
    model = load_model(tiny_checkpoint)
    pre = Preprocess.from_meta(model.introspect_meta)
    folder = ImageFolderDataset(tmp_path, pre)
    streamed = first_layer_filters(model, folder, batch_size=2)
    x = load_images(folder.paths, pre)
    whole = first_layer_filters(model, x, batch_size=len(x))
    assert torch.equal(streamed.max_activation, whole.max_activation) and streamed.images_seen == 5
    conv = model.features[0]
    with torch.no_grad():
        direct = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding).amax((0, 2, 3))
    torch.testing.assert_close(whole.max_activation, direct)


# --------------------------------------------------------------------------------------------------
# layers, the model, the bundled checkpoint
# --------------------------------------------------------------------------------------------------
def test_layers_by_default_alias_and_module(make_model):
    model = make_model("zfnet")
    first = first_layer_filters(model)
    assert (first.layer, first.alias, first.kernel_size, first.stride) == ("features.0", "conv1", (7, 7), (2, 2))
    second = first_layer_filters(model, layer="conv2")
    assert second.layer == "features.4" and second.kernel_size == (5, 5) and second.weights.shape == (256, 96, 5, 5)
    assert torch.equal(second.weights, model.features[4].weight.detach())
    assert first_layer_filters(model, layer=model.features[4]).layer == "features.4"
    with pytest.raises(IntrospectError, match="not a convolution"):
        first_layer_filters(model, layer="relu1")
    with pytest.raises(IntrospectError, match="unknown layer"):
        first_layer_filters(model, layer="conv9")
    with pytest.raises(IntrospectError, match="no Conv2d"):
        first_layer_filters(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))
    with pytest.raises(IntrospectError, match="dilated"):
        first_layer_filters(nn.Sequential(nn.Conv2d(3, 2, 3, dilation=2)))


def test_model_is_left_as_found_and_results_are_copies():
    torch.manual_seed(4)
    net = conv_net(torch.randn(3, 3, 5, 5), torch.zeros(3)).train()
    net[0].eval()  # a mixed state, restored module by module
    before = snapshot(net)
    result = first_layer_filters(net, torch.rand(4, 3, 12, 12))
    assert same_snapshot(before, snapshot(net))
    assert net.training and not net[0].training
    result.weights.zero_()
    assert float(net[0].weight.detach().abs().sum()) > 0


def test_bad_inputs_raise_one_line():
    net = conv_net(torch.randn(2, 3, 5, 5), torch.zeros(2))
    cases = [
        (dict(dataset=torch.rand(0, 3, 9, 9)), "empty"),
        (dict(dataset=torch.rand(3, 9, 9)), r"\(N, C, H, W\)"),
        (dict(dataset=torch.rand(2, 1, 9, 9)), "cannot run on images"),
        (dict(hf_cutoff=0.7), "hf_cutoff"),
        (dict(norm_fraction=1.5), "norm_fraction"),
        (dict(batch_size=0), "batch_size"),
        (dict(fft_size=3), "smaller than"),
    ]
    for kwargs, message in cases:
        with pytest.raises(IntrospectError, match=message) as info:
            first_layer_filters(net, **kwargs)
        assert "\n" not in str(info.value)


def test_diverged_weights_are_refused_not_reported_alive():
    for bad in (float("nan"), float("inf")):
        weight = torch.randn(3, 3, 5, 5)
        weight[1, 0, 2, 2] = bad
        with pytest.raises(IntrospectError, match="NaN or infinite weights") as info:
            first_layer_filters(conv_net(weight, torch.zeros(3)), torch.rand(2, 3, 9, 9))
        assert "\n" not in str(info.value)
    with pytest.raises(IntrospectError, match="NaN or infinite weights"):
        first_layer_filters(conv_net(torch.randn(3, 3, 5, 5), torch.tensor([0.0, float("nan"), 0.0])))


class CountingImages(torch.utils.data.Dataset):
    """Four random images that count how often they are read."""

    def __init__(self):
        self.reads = 0

    def __len__(self):
        return 4

    def __getitem__(self, i):
        self.reads += 1
        return torch.rand(3, 9, 9)


def test_a_bad_fft_size_fails_before_the_data_is_read():
    net, images = conv_net(torch.randn(2, 3, 5, 5), torch.zeros(2)), CountingImages()
    with pytest.raises(IntrospectError, match="smaller than the 5x5 filters"):
        first_layer_filters(net, images, fft_size=4)
    assert images.reads == 0
    assert first_layer_filters(net, images, fft_size=8).images_seen == 4 and images.reads == 4


def test_bundled_model_registered_and_exact():
    model = load_model(None)
    assert introspect.first_layer_filters is first_layer_filters
    from introspect.cli import bundled_image_dir

    data = ImageFolderDataset(bundled_image_dir(), Preprocess.from_meta(model.introspect_meta))
    result = first_layer_filters(model, data, batch_size=3)
    assert (result.alias, result.kernel_size, result.stride) == ("conv1", (7, 7), (1, 1))
    assert result.aliasing.abs().max() == 0  # stride 1 subsamples nothing
    assert ((result.high_frequency > 0) & (result.high_frequency < 1)).all()
    x = load_images(data.paths, data.preprocess)
    conv = model.features[0]
    with torch.no_grad():
        direct = F.conv2d(x, conv.weight, conv.bias, 1, 3).amax((0, 2, 3))
    torch.testing.assert_close(result.max_activation, direct)
    assert result.dead.tolist() == [bool(d <= 0) for d in direct.tolist()]  # no tiny norms in this model


# --------------------------------------------------------------------------------------------------
# pictures
# --------------------------------------------------------------------------------------------------
def test_grid_has_one_tile_per_filter_and_marks_the_dead():
    torch.manual_seed(5)
    w = torch.randn(10, 3, 7, 7)
    w[3] = 0.0
    w[7] *= 1e-4
    result = first_layer_filters(conv_net(w, torch.zeros(10)))
    tiles = filter_tiles(result)
    assert len(tiles) == 10
    zoom = 8  # 7x7 filters enlarged to 56 pixels
    for i, tile in enumerate(tiles):
        f = w[i].double().numpy()
        span = f.max() - f.min()
        scaled = np.zeros_like(f) if span == 0 else (f - f.min()) / span
        expected = np.round(scaled * 255).astype(np.uint8).transpose(1, 2, 0).repeat(zoom, 0).repeat(zoom, 1)
        np.testing.assert_array_equal(tile[2:-2, 2:-2], expected)
        border = np.concatenate([tile[:2].reshape(-1, 3), tile[-2:].reshape(-1, 3)])
        assert (border == (DEAD if i in (3, 7) else LIVE)).all()
    picture = filters_picture(result)
    frame_pixels = 60 * 60 - 56 * 56
    red = int(np.all(picture == DEAD, axis=2).sum())
    assert red == 2 * frame_pixels  # exactly the two dead filters are framed red
    assert picture.shape[0] > 4 * 60 and picture.shape[1] > 4 * 60  # a 4 x 3 grid with labels
    spectrum = spectrum_picture(result)
    assert spectrum.dtype == np.uint8 and spectrum.shape[0] >= 224
