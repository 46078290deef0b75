"""Model files: checkpoints, state dicts, safetensors, trusted pickles, and clear errors."""
from __future__ import annotations

import pickle

import pytest
import torch
import torchvision

from introspect.errors import IntrospectError
from introspect.models import load_model, meta_of, save_checkpoint, zfnet
from introspect.models.load import read_safetensors


def small_zfnet():
    torch.manual_seed(0)
    return zfnet(num_classes=4, widths=(8, 16, 16, 16, 8), fc=32)


def test_checkpoint_round_trip_is_weights_only(tmp_path):
    model = small_zfnet()
    path = save_checkpoint(tmp_path / "m.pt", model, arch="zfnet",
                           arch_kwargs={"num_classes": 4, "widths": [8, 16, 16, 16, 8], "fc": 32},
                           classes=["a", "b", "c", "d"], input_size=(3, 224, 224), mean=(0.5,) * 3, std=(0.25,) * 3)
    raw = torch.load(path, weights_only=True)  # no code can run
    assert raw["format"] == "introspect-checkpoint" and raw["arch"] == "zfnet"
    loaded = load_model(path)
    meta = meta_of(loaded)
    assert meta.classes == ["a", "b", "c", "d"] and meta.mean == (0.5,) * 3 and meta.input_size == (3, 224, 224)
    assert not loaded.training
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    assert meta.class_name(2) == "c" and meta.class_name(9) == "9"


def test_state_dict_needs_arch_and_infers_class_count(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=7).eval()
    torch.save(model.state_dict(), tmp_path / "r.pth")
    with pytest.raises(IntrospectError, match="pass --arch"):
        load_model(tmp_path / "r.pth")
    loaded = load_model(tmp_path / "r.pth", arch="resnet18")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_torchvision_alexnet_state_dict_loads_with_arch_alexnet(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.alexnet().eval()
    torch.save(tv.state_dict(), tmp_path / "alexnet.pth")
    for arch in ("alexnet", "alexnet_torchvision"):
        loaded = load_model(tmp_path / "alexnet.pth", arch=arch)
        assert meta_of(loaded).arch == "alexnet_torchvision"
        x = torch.randn(1, 3, 224, 224)
        with torch.no_grad():
            assert torch.equal(loaded(x), tv(x))
        assert dict(loaded.named_modules())["features.10"] is loaded.features[10]


def test_wrong_architecture_names_keys_and_shapes(tmp_path):
    torch.save(torchvision.models.vgg11().state_dict(), tmp_path / "vgg.pth")
    with pytest.raises(IntrospectError) as err:
        load_model(tmp_path / "vgg.pth", arch="zfnet")
    msg = str(err.value)
    assert "features.0.weight has shape (64, 3, 3, 3) in the file but (96, 3, 7, 7) in the model" in msg
    assert "\n" not in msg and "--arch" in msg


def test_safetensors_file_with_arch(tmp_path):
    from safetensors.torch import save_file  # the reference writer

    model = small_zfnet().eval()
    save_file(model.state_dict(), str(tmp_path / "m.safetensors"))
    state = read_safetensors(tmp_path / "m.safetensors")
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    with pytest.raises(IntrospectError, match="do not fit"):
        load_model(tmp_path / "m.safetensors", arch="zfnet")  # widths differ from the default


class Evil:
    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.target),))


def test_pickle_carrying_code_is_refused_without_trust(tmp_path):
    marker = tmp_path / "pwned"
    evil = Evil()
    evil.target = str(marker)
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"state_dict": evil}, f)
    with pytest.raises(IntrospectError, match="--trust-pickle"):
        load_model(tmp_path / "evil.pt")
    assert not marker.exists()


def test_whole_module_pickle_loads_only_with_trust(tmp_path):
    model = small_zfnet().eval()
    torch.save(model, tmp_path / "whole.pt")
    with pytest.raises(IntrospectError, match="arbitrary code"):
        load_model(tmp_path / "whole.pt")
    loaded = load_model(tmp_path / "whole.pt", trust_pickle=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_arch_alone_builds_random_model():
    model = load_model(None, arch="vgg11")
    assert meta_of(model).source == "random" and meta_of(model).arch == "vgg11"
    with pytest.raises(IntrospectError, match="did you mean 'resnet18'"):
        load_model(None, arch="resnet1B")


def test_checkpoint_arch_conflict(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", small_zfnet(), arch="zfnet",
                           arch_kwargs={"num_classes": 4, "widths": [8, 16, 16, 16, 8], "fc": 32})
    with pytest.raises(IntrospectError, match="is a 'zfnet' checkpoint"):
        load_model(path, arch="vgg11")
