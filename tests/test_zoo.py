"""Every torchvision classification architecture, random weights, smallest input: the default layer
runs in the eval-mode forward pass, and project, top-k, occlusion (incremental and whole passes) and
correspondence leave the model exactly as they found it (values, storage, version counters, grads,
training flags, inplace flags, hooks, attributes), also for models with stateful buffers (MaxViT).
The largest members of six families are built narrower (``zoo.NARROW``); each of those is checked to
have the full-width model's module tree, module types and order of running."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo import NARROW, SLOW, ZOO, build, changes, full_width_structure, modules_that_run, snapshot


def _params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


def test_zoo_is_torchvisions_whole_list():
    import torchvision

    assert len(ZOO) == len(torchvision.models.list_models(module=torchvision.models)) >= 80


@pytest.mark.parametrize("name", _params(ZOO))
def test_default_layer_runs_and_every_method_leaves_the_model_unchanged(name, one_thread):
    from introspect import correspondence, occlusion, project, top_k
    from introspect.core import resolve_layer
    from introspect.core.layers import last_conv_layer

    model, side = build(name)
    torch.manual_seed(1)
    x = torch.randn(2, 3, side, side)
    run = modules_that_run(model, x[:1])
    modules = dict(model.named_modules())
    if name in NARROW:  # narrower, but torchvision's module tree, module types and order of running
        assert ([(n, type(m)) for n, m in model.named_modules()], run) == full_width_structure(name)
    ran = [n for n in run if isinstance(modules[n], nn.Conv2d)]
    default = last_conv_layer(model, x)
    assert default == ran[-1], (default, ran[-3:])
    model.train()  # every flag must come back as the caller left it, not as eval
    before = snapshot(model)

    result = project(model, x[:1], maps=1)
    assert resolve_layer(model, result.name)[0] == default and torch.isfinite(result.projections).all()
    assert changes(before, model, values=False) == [], "project"

    found = top_k(model, x, k=1, channels=[0], batch_size=2, project=False)  # projections: above
    assert found.activation.shape[:2] == (1, 1)
    assert changes(before, model, values=False) == [], "top_k"

    half = side // 2
    for incremental in (True, False):
        occ = occlusion(model, x[:1], size=half, stride=half, incremental=incremental, project=False)
        assert occ.prob.shape == (1, 2, 2)
        assert changes(before, model, values=False) == [], f"occlusion incremental={incremental}"

    box = [side // 4, side // 4, side // 2, side // 2]
    table = correspondence(model, x, parts={"part": box}, layers=[default], random_trials=0)
    assert table.to_dict()
    assert changes(before, model) == [], "correspondence"
