"""``introspect.attribute`` and ``introspect attribute``: every method equals captum called directly."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from captum import attr as ca

from conftest import invoke
from introspect.errors import IntrospectError
from introspect.models import ModelMeta, zfnet
from introspect_attribute.method import attribute
from introspect_attribute.table import METHODS


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = zfnet(num_classes=4, widths=(8, 16, 16, 16, 8), fc=16, pool5_size=1, lrn=False).eval().double()
    net.introspect_meta = ModelMeta(arch="zfnet", classes=["cat", "dog", "bird", "fish"], input_size=(3, 48, 48))
    return net


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(1)
    return torch.randn(2, 3, 48, 48, dtype=torch.float64)


#: (our options, captum's attribute keywords) per method, small for speed
CASES = {
    "saliency": ({}, {"abs": True}),
    "input_x_gradient": ({}, {}),
    "integrated_gradients": ({"n_steps": 8}, {"n_steps": 8, "baselines": 0.0}),
    "gradient_shap": ({"n_samples": 4, "stdevs": 0.1, "baseline": 0.5},
                      {"n_samples": 4, "stdevs": 0.1,
                       "baselines": torch.full((1, 3, 48, 48), 0.5, dtype=torch.float64)}),
    "guided_backprop": ({}, {}),
    "deconvolution": ({}, {}),
    "guided_gradcam": ({}, {"interpolate_mode": "nearest"}),
    "layer_gradcam": ({}, {"relu_attributions": True}),
    "occlusion": ({"window": 16, "stride": 8}, {"sliding_window_shapes": (3, 16, 16), "strides": (3, 8, 8),
                                                 "baselines": 0.0}),
    "feature_ablation": ({"grid": 16}, {"baselines": 0.0}),
    "shapley_value_sampling": ({"grid": 24, "n_samples": 2}, {"baselines": 0.0, "n_samples": 2}),
}
CAPTUM = {
    "saliency": ca.Saliency,
    "input_x_gradient": ca.InputXGradient,
    "integrated_gradients": ca.IntegratedGradients,
    "gradient_shap": ca.GradientShap,
    "guided_backprop": ca.GuidedBackprop,
    "deconvolution": ca.Deconvolution,
    "guided_gradcam": ca.GuidedGradCam,
    "layer_gradcam": ca.LayerGradCam,
    "occlusion": ca.Occlusion,
    "feature_ablation": ca.FeatureAblation,
    "shapley_value_sampling": ca.ShapleyValueSampling,
}


def grid_mask(side, h=48, w=48):
    ids = torch.arange(h)[:, None] // side * ((w + side - 1) // side) + torch.arange(w)[None, :] // side
    return ids.view(1, 1, h, w)


def test_the_table_lists_every_method():
    assert set(METHODS) == set(CASES) == set(CAPTUM)


@pytest.mark.parametrize("name", list(CASES))
def test_every_method_equals_captum(model, x, name):
    ours_opts, theirs_kwargs = CASES[name]
    spec = METHODS[name]
    layer = model.features[8] if spec.layer else None
    result = attribute(model, x, method=name, target=["dog", 3], layer="features.8" if spec.layer else None, seed=3,
                       **ours_opts)
    theirs_kwargs = dict(theirs_kwargs)
    if name == "feature_ablation":
        theirs_kwargs.update(feature_mask=grid_mask(16), perturbations_per_eval=16)
    if name == "shapley_value_sampling":
        theirs_kwargs.update(feature_mask=grid_mask(24), perturbations_per_eval=16)
    obj = CAPTUM[name](model, layer) if spec.layer else CAPTUM[name](model)
    torch.manual_seed(3)
    np.random.seed(3)
    expected = obj.attribute(x.clone(), target=[1, 3], **theirs_kwargs)
    if name == "layer_gradcam":
        expected = ca.LayerAttribution.interpolate(expected, (48, 48), interpolate_mode="bilinear")
    assert result.attribution.shape == expected.shape and result.targets == [1, 3]
    torch.testing.assert_close(result.attribution, expected.float(), rtol=1e-5,
                               atol=1e-5 * float(expected.abs().max()) + 1e-12)
    assert result.target_names == ["dog", "fish"]
    summary = result.to_dict()
    assert summary["method"] == name and summary["images"][1]["target"] == 3
    if name == "occlusion":
        assert result.path in ("incremental", "full", "mixed")


def test_the_method_name_may_come_third_by_position(model, x):
    """``introspect.attribute(model, images, "saliency")``: the same as ``method="saliency"`` and as
    captum's ``Saliency``."""
    by_position = attribute(model, x, "saliency", target=[1, 3])
    by_keyword = attribute(model, x, method="saliency", target=[1, 3])
    expected = ca.Saliency(model).attribute(x.clone(), target=[1, 3])
    torch.testing.assert_close(by_position.attribution, by_keyword.attribution, rtol=0, atol=0)
    torch.testing.assert_close(by_position.attribution, expected.float(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("nt", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_noise_tunnel_equals_captums(model, x, nt):
    result = attribute(model, x, method="integrated_gradients", target=1, noise_tunnel=nt, nt_samples=3, nt_stdevs=0.2,
                       seed=5, n_steps=4)
    torch.manual_seed(5)
    expected = ca.NoiseTunnel(ca.IntegratedGradients(model)).attribute(
        x, nt_type=nt, nt_samples=3, stdevs=0.2, target=[1, 1], n_steps=4, baselines=0.0,
        method="gausslegendre", internal_batch_size=None)
    torch.testing.assert_close(result.attribution, expected.float(), rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    assert result.noise_tunnel == nt


def test_metrics_are_captums(model, x):
    from captum.metrics import infidelity, sensitivity_max

    result = attribute(model, x, method="saliency", target=2, metrics=True, metric_samples=3, seed=7)
    m = result.metrics
    assert len(m["infidelity"]) == 2 and len(m["sensitivity_max"]) == 2

    def perturb(inputs):
        noise = torch.randn_like(inputs) * 0.003
        return noise, inputs - noise
    torch.manual_seed(7)
    attr = ca.Saliency(model).attribute(x, target=[2, 2], abs=True)
    torch.manual_seed(7)
    infid = infidelity(model, perturb, x, attr, target=[2, 2], n_perturb_samples=3)
    torch.manual_seed(7)
    sens = sensitivity_max(ca.Saliency(model).attribute, x, target=[2, 2], n_perturb_samples=3, perturb_radius=0.02)
    assert m["infidelity"] == pytest.approx(infid.tolist(), rel=1e-5)
    assert m["sensitivity_max"] == pytest.approx(sens.tolist(), rel=1e-5)


def test_default_target_is_the_top_class_and_save_writes_every_file(model, x, tmp_path):
    result = attribute(model, x, method="input_x_gradient")
    with torch.no_grad():
        assert result.targets == model(x).argmax(1).tolist()
    files = result.save(tmp_path / "out")
    names = sorted(p.name for p in files)
    assert names == sorted(["attribution.npy", "input.npy", "result.json", "signed_0.png", "absolute_0.png",
                            "signed_1.png", "absolute_1.png"])
    import numpy as np
    assert np.load(tmp_path / "out" / "attribution.npy").shape == (2, 3, 48, 48)
    assert json.loads((tmp_path / "out" / "result.json").read_text())["method"] == "input_x_gradient"


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="salency"), "unknown method 'salency' (did you mean 'saliency'"),
    (dict(method="layer_gradcam"), "needs a layer"),
    (dict(method="saliency", target=7), "out of range"),
    (dict(method="saliency", target="zebra"), "unknown target class 'zebra'"),
    (dict(method="occlusion", noise_tunnel="smoothgrad"), "perturbation method"),
    (dict(method="saliency", n_steps=3), "has no option 'n_steps'"),
    (dict(method="occlusion", window="big"), "option window takes a int"),
])
def test_bad_arguments_are_one_line(model, x, kwargs, message):
    method = kwargs.pop("method")
    with pytest.raises(IntrospectError, match=message.replace("(", r"\(")):
        attribute(model, x, method=method, **kwargs)


def test_integer_inputs_are_refused(model):
    with pytest.raises(IntrospectError, match="floating-point"):
        attribute(model, torch.zeros(1, 3, 48, 48, dtype=torch.int64), method="integrated_gradients")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from introspect.models import save_checkpoint

    torch.manual_seed(0)
    kwargs = {"num_classes": 3, "widths": [8, 16, 16, 16, 8], "fc": 16, "pool5_size": 1}
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, zfnet(**kwargs).eval(), arch="zfnet", arch_kwargs=kwargs, classes=["cat", "dog", "bird"],
                    input_size=(3, 64, 64), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return path


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    import numpy as np
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (70, 80, 3), dtype=np.uint8)).save(path)
    return path


def run(*args):
    return invoke(*args)


def test_cli_writes_maps_arrays_and_json(checkpoint, photo, tmp_path):
    out = tmp_path / "attr"
    result = run("attribute", checkpoint, photo, "--method", "layer_gradcam", "--layer", "conv5", "--target", "dog",
                 "--metrics", "--opt", "interpolate=nearest", "--out", out, "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["layer"] == "features.12" and summary["images"][0]["target_name"] == "dog"
    assert set(summary["files"]) == {"attribution.npy", "input.npy", "result.json", "signed_0.png", "absolute_0.png"}
    assert set(json.loads((out / "result.json").read_text())["metrics"]) == {"infidelity", "sensitivity_max", "samples"}
    # the array is captum's on the exact input the command used
    import numpy as np

    from introspect.models import load_model
    net = load_model(checkpoint)
    x = torch.from_numpy(np.load(out / "input.npy"))
    expected = ca.LayerAttribution.interpolate(ca.LayerGradCam(net, net.features[12]).attribute(
        x, target=1, relu_attributions=True), (64, 64), interpolate_mode="nearest")
    torch.testing.assert_close(torch.from_numpy(np.load(out / "attribution.npy")), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--method", "integrated_gradient"], "did you mean 'integrated_gradients'"),
    (["--method", "guided_gradcam"], "needs a layer"),
    (["--method", "saliency", "--target", "9"], "out of range"),
    (["--method", "saliency", "--target", "zebra"], "unknown target class 'zebra'"),
    (["--method", "saliency", "--opt", "abs"], "--opt takes NAME=VALUE"),
])
def test_cli_bad_input_is_one_line_and_no_files(checkpoint, photo, tmp_path, args, message):
    out = tmp_path / "nothing"
    result = run("attribute", checkpoint, photo, *args, "--out", out, "--device", "cpu")
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.output
    assert not out.exists()
