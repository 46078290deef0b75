"""Layer names, the paper's sizes, and receptive / projective fields against brute force."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from introspect.core.layers import Field, layer_table, receptive_field, resolve_layer
from introspect.errors import IntrospectError
from introspect.models import alexnet, zfnet


def test_zfnet_feature_map_sizes_are_the_papers():
    rows = {r.alias: r for r in layer_table(zfnet(), (3, 224, 224)) if r.alias}
    sizes = [rows[a].output_shape for a in ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5")]
    assert sizes == [(96, 110, 110), (96, 55, 55), (256, 26, 26), (256, 13, 13),
                     (384, 13, 13), (384, 13, 13), (256, 13, 13), (256, 6, 6)]
    assert rows["fc6"].output_shape == (4096,) and rows["fc7"].output_shape == (4096,)
    assert rows["fc8"].output_shape == (1000,)


def test_zfnet_parameter_count():
    # conv1 96*3*7*7+96, conv2 256*96*5*5+256, conv3 384*256*9+384, conv4 384*384*9+384,
    # conv5 256*384*9+256, fc6 9216*4096+4096, fc7 4096*4096+4096, fc8 4096*1000+1000
    expected = (14_208 + 614_656 + 885_120 + 1_327_488 + 884_992 + 37_752_832 + 16_781_312 + 4_097_000)
    assert expected == 62_357_608
    assert sum(p.numel() for p in zfnet().parameters()) == expected


def test_alexnet_is_the_papers_baseline():
    rows = {r.alias: r for r in layer_table(alexnet(), (3, 224, 224)) if r.alias}
    assert rows["conv1"].output_shape == (96, 55, 55) and rows["conv1"].rf_size == (11, 11)
    assert rows["conv1"].rf_stride == (4, 4) and rows["pool5"].output_shape == (256, 6, 6)
    assert type(alexnet().features[2]).__name__ == "LocalResponseNorm"


def test_aliases_and_suggestions():
    model = zfnet()
    assert resolve_layer(model, "conv5")[0] == "features.12"
    assert resolve_layer(model, "features.12")[1] is model.features[12]
    with pytest.raises(IntrospectError, match="did you mean 'conv5'"):
        resolve_layer(model, "conv55")


class _Linearize(TorchFunctionMode):
    """For brute force: ReLU -> identity, max pool -> average pool of the same geometry, so that the
    gradient of a unit reaches every pixel of its receptive field (with positive weights)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (F.relu, torch.relu, torch.relu_, torch.Tensor.relu):
            return args[0] * 1.0
        if func is F.max_pool2d:
            x, k = args[0], args[1]
            stride = args[2] if len(args) > 2 else kwargs.get("stride")
            pad = args[3] if len(args) > 3 else kwargs.get("padding", 0)
            ceil = kwargs.get("ceil_mode", args[5] if len(args) > 5 else False)
            return F.avg_pool2d(x, k, stride, pad, ceil_mode=ceil, count_include_pad=False)
        return func(*args, **kwargs)


def _positive_copy(model):
    m = copy.deepcopy(model).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(p.abs() + 0.01)
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.zero_()
                mod.running_var.fill_(1.0)
    return m


class _Features(torch.nn.Module):
    """VGG's feature layers alone (``features.N`` as in VGG): the fields never reach the classifier."""

    def __init__(self, features: torch.nn.Sequential):
        super().__init__()
        self.features = features

    def forward(self, x):
        return self.features(x)


def _field_model(make_model, name: str) -> torch.nn.Module:
    """The geometry of ``name`` (every kernel, stride, padding and pooling) at a few channels where the
    widths do not change a field: the paper's ZFNet and VGG11's features with 8 maps per layer."""
    torch.manual_seed(0)
    if name == "zfnet(narrow)":
        return zfnet(num_classes=10, widths=(8, 8, 8, 8, 8), fc=8).eval()
    if name == "vgg11(narrow)":
        from torchvision.models.vgg import cfgs, make_layers

        return _Features(make_layers([v if v == "M" else 8 for v in cfgs["A"]])).eval()
    return make_model(name)


CASES = [
    ("zfnet(narrow)", ["conv1", "pool1", "conv2", "pool2", "conv3", "conv5"], 224),
    ("vgg11(narrow)", ["features.0", "features.2", "features.8", "features.15"], 96),
    ("resnet18", ["maxpool", "layer1.0", "layer2.0", "layer3.1.conv1"], 96),
]


@pytest.mark.parametrize("name,layers,size", CASES)
def test_receptive_field_matches_brute_force(make_model, name, layers, size):
    model = _positive_copy(_field_model(make_model, name))
    from introspect.core import attach

    for layer in layers:
        field = receptive_field(model, layer, (3, size, size))
        x = torch.rand(1, 3, size, size, requires_grad=True)
        with _Linearize(), attach(model, [layer], detach=False) as rec:
            rec.forward(x, stop=True)
        act = rec[layer]
        h, w = act.shape[-2:]
        for oy, ox in [(h // 2, w // 2), (0, 0), (h - 1, w - 1)]:
            (g,) = torch.autograd.grad(act[0, 0, oy, ox], x, retain_graph=True)
            ys, xs = torch.nonzero(g[0].abs().sum(0) > 0, as_tuple=True)
            found = (int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1)
            assert found == field.receptive_box(oy, ox, (size, size)), (layer, oy, ox)


@pytest.mark.parametrize("name,layers,size", CASES)
def test_projective_field_matches_brute_force(make_model, name, layers, size):
    model = _positive_copy(_field_model(make_model, name))
    from introspect.core import attach

    box = (size // 3, size // 4, size // 3 + 9, size // 4 + 13)
    x = torch.rand(1, 3, size, size)
    x2 = x.clone()
    x2[..., box[0]:box[2], box[1]:box[3]] += 1.0
    for layer in layers:
        field = receptive_field(model, layer, (3, size, size))
        with _Linearize(), attach(model, [layer]) as rec, torch.no_grad():
            rec.forward(x, stop=True)
            a = rec[layer]
            rec.forward(x2, stop=True)
            b = rec[layer]
        ys, xs = torch.nonzero((a - b).abs().sum((0, 1)) > 0, as_tuple=True)
        found = (int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1)
        assert found == field.projective_box(box, tuple(a.shape[-2:])), layer


def test_field_arithmetic_by_hand():
    f = Field.identity().then((7, 7), (2, 2), (1, 1)).then((3, 3), (2, 2), (0, 0))
    assert f.size == (11, 11) and f.jump == (4, 4) and f.lo == (-1, -1)
    assert f.receptive_box(0, 0, (224, 224)) == (0, 0, 10, 10)
    assert f.receptive_box(10, 3) == (39, 11, 50, 22)
    assert f.projective_box((0, 0, 1, 1), (55, 55)) == (0, 0, 1, 1)
    assert f.projective_box((39, 39, 40, 40), (55, 55)) == (8, 8, 11, 11)


def test_layer_table_marks_global_layers(make_model):
    rows = {r.name: r for r in layer_table(make_model("resnet18"), (3, 64, 64))}
    assert rows["avgpool"].is_global and rows["fc"].is_global
    assert not rows["layer4"].is_global and rows["layer4"].rf_stride == (32, 32)
    assert rows["conv1"].rf_size == (7, 7)


class _Counted(torch.nn.Module):
    """Counts its calls; refuses inputs of the wrong width (a classifier sized for another input)."""

    def __init__(self, width: int):
        super().__init__()
        self.width, self.calls = width, 0

    def forward(self, x):
        self.calls += 1
        if x.shape[-1] != self.width:
            raise RuntimeError("wrong width")
        return x


def test_forward_until_stops_at_the_layer_and_removes_its_hook():
    from introspect.core.layers import StopForward, forward_until

    torch.manual_seed(0)
    conv, top = torch.nn.Conv2d(3, 4, 3), _Counted(width=7)
    model = torch.nn.Sequential(conv, torch.nn.ReLU(), top)
    x = torch.randn(2, 3, 9, 9)
    out = forward_until(model, x, conv)
    assert torch.equal(out, torch.nn.functional.conv2d(x, conv.weight, conv.bias)) and top.calls == 0
    assert forward_until(model, x, torch.nn.ReLU()) is None and top.calls == 1  # not in the model: never reached

    def early(module, inputs, output):                                  # a caller's own hook may stop the pass
        raise StopForward
    handle = conv.register_forward_hook(early)
    try:
        assert forward_until(model, x, model[1]) is None and top.calls == 1
    finally:
        handle.remove()
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(RuntimeError, match="wrong width"):             # an error inside the pass comes through
        forward_until(model, torch.randn(1, 3, 11, 11), top)
    assert all(not m._forward_hooks for m in model.modules())


def test_receptive_field_with_stop_ignores_the_layers_above():
    stem = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 5, stride=2), torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2))
    model = torch.nn.Sequential(*stem, _Counted(width=99))
    with pytest.raises(RuntimeError, match="wrong width"):
        receptive_field(model, "2", (3, 32, 32))
    assert receptive_field(model, "2", (3, 32, 32), stop=True) == receptive_field(stem, "2", (3, 32, 32))
