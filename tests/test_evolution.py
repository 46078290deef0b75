"""Feature evolution (introspect_evolution): every column against a brute-force pass over its checkpoint."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import introspect
from introspect.errors import IntrospectError
from introspect.models import load_model, save_checkpoint, zfnet
from introspect.models.zfnet import pool5_size_for
from introspect.training import TensorImageDataset, TrainConfig, init_paper, train_model
from introspect_evolution import EvolutionResult, feature_evolution

KWARGS = dict(num_classes=10, widths=(8, 12, 16, 16, 12), fc=32, conv1_padding=3, conv2_stride=1, conv2_padding=2)
KWARGS["pool5_size"] = pool5_size_for(32, **KWARGS)
MEAN, STD = (0.3,) * 3, (0.4,) * 3


pytestmark = pytest.mark.usefixtures("one_thread")


def digits(first: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits as uint8 images ``(N, 1, 8, 8)`` and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.tensor(d.images[first:first + count] * (255 / 16)).round().to(torch.uint8)[:, None]
    return images, torch.tensor(d.target[first:first + count])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Three epochs of the training library on 150 digits: the folder of epoch_*.pt it writes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before the per-test one
    try:
        images, labels = digits(0, 150)
        torch.manual_seed(0)
        model = init_paper(zfnet(**KWARGS), 0.1)
        out = tmp_path_factory.mktemp("run")
        train_model(model, TensorImageDataset(images, labels, [str(i) for i in range(10)]), arch="zfnet",
                    arch_kwargs=KWARGS, input_size=(3, 32, 32), mean=MEAN, std=STD, out=out,
                    config=TrainConfig(epochs=3, batch_size=25, lr=0.05, flip=False))
    finally:
        torch.set_num_threads(before)
    return out


@pytest.fixture(scope="module")
def data():
    """24 other digits, preprocessed as the run's checkpoints want: ``(24, 3, 32, 32)``."""
    from introspect.training import BatchTransform

    images, _ = digits(1000, 24)
    return BatchTransform((3, 32, 32), MEAN, STD)(images)


def brute_force(model, data, layer):
    """Per feature map, the strongest activation over ``data`` by a plain loop over images and
    positions (ties: the earlier image, then the first position): ``{map: (value, image, (y, x))}``,
    with the activations themselves."""
    module = dict(model.named_modules())[layer]
    seen = []
    handle = module.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    try:
        with torch.no_grad():
            model(data)
    finally:
        handle.remove()
    act = seen[0]
    best = {}
    for c in range(act.shape[1]):
        for n in range(act.shape[0]):
            flat = act[n, c].flatten().tolist()
            value = max(flat)
            if c not in best or value > best[c][0]:  # strictly larger: ties keep the earlier image
                at = flat.index(value)  # the first position holding it
                best[c] = (value, n, divmod(at, act.shape[3]))
    return best, act


def window(full: torch.Tensor, origin, size) -> torch.Tensor:
    """The ``size`` window of a ``(C, H, W)`` image with its corner at ``origin`` (zero outside)."""
    out = torch.zeros(full.shape[0], *size)
    oy, ox = origin
    for y in range(size[0]):
        for x in range(size[1]):
            if 0 <= oy + y < full.shape[1] and 0 <= ox + x < full.shape[2]:
                out[:, y, x] = full[:, oy + y, ox + x]
    return out


def test_every_column_is_the_strongest_activation_of_its_checkpoint(run, data):
    result = feature_evolution(run, data, layers=["conv1", "conv5"], maps=4, batch_size=len(data))
    files = sorted(run.glob("epoch_*.pt"))
    assert result.epochs == [1, 2, 3] and result.sources == [str(f) for f in files]
    assert result.images_seen == len(data)
    for entry in result.layers:
        m, e = entry.activation.shape
        assert (m, e) == (4, 3) and entry.projections.shape[:3] == (4, 3, 3)
        last, _ = brute_force(load_model(files[-1]), data, entry.layer)
        ranking = sorted(last, key=lambda c: (-last[c][0], c))
        assert entry.channels.tolist() == ranking[:4] and entry.selection == "strongest at epoch 3"
        for k, path in enumerate(files):
            model = load_model(path)
            best, act = brute_force(model, data, entry.layer)
            field = introspect.receptive_field(model, entry.layer, (3, 32, 32))
            for j, c in enumerate(entry.channels.tolist()):
                value, image, (y, x) = best[c]
                assert int(entry.image_index[j, k]) == image
                assert entry.position[j, k].tolist() == [y, x]
                assert float(entry.activation[j, k]) == pytest.approx(value, rel=1e-5, abs=1e-6)
                y0, x0 = field.lo[0] + y * field.jump[0], field.lo[1] + x * field.jump[1]
                box = [max(y0, 0), max(x0, 0), min(y0 + field.size[0], 32), min(x0 + field.size[1], 32)]
                assert entry.boxes[j, k].tolist() == box
                # the projection is the deconvnet projection of that one activation of that image
                full = introspect.project(model, data[image:image + 1], layer=entry.layer, channels=[c]).projections[0]
                expected = window(full, entry.origins[j, k].tolist(), tuple(entry.projections.shape[-2:]))
                torch.testing.assert_close(entry.projections[j, k], expected, rtol=1e-4, atol=1e-6)
                assert float(entry.projections[j, k].abs().max()) > 0


def test_rows_and_columns_keep_the_given_order(run, data):
    files = sorted(run.glob("epoch_*.pt"))
    order = [files[2], files[0], files[1]]
    result = feature_evolution(order, data, layers="conv3", channels=[9, 0, 4, 9], batch_size=7)
    assert result.epochs == [3, 1, 2] and result.sources == [str(f) for f in order]
    assert result.channels.tolist() == [9, 0, 4] and result["conv3"].selection == "given"
    assert result.projections.shape[:2] == (3, 3)
    for k, path in enumerate(order):
        best, _ = brute_force(load_model(path), data, "features.8")
        assert result.image_index[:, k].tolist() == [best[c][1] for c in (9, 0, 4)]
        torch.testing.assert_close(result.activation[:, k], torch.tensor([best[c][0] for c in (9, 0, 4)]),
                                   rtol=1e-5, atol=1e-6)


def test_several_layers_need_picking_and_channels_per_layer(run, data):
    result = feature_evolution(run, data, layers=["conv2", "conv1"], channels={"conv1": [2, 1]}, maps=3)
    assert [entry.name for entry in result.layers] == ["conv2", "conv1"]
    assert result["conv1"].channels.tolist() == [2, 1] and result["features.0"].selection == "given"
    assert len(result["conv2"].channels) == 3
    with pytest.raises(IntrospectError, match="holds 2 layers"):
        _ = result.channels
    with pytest.raises(IntrospectError, match="no layer 'conv4'"):
        result["conv4"]


def make_model(seed: int, widths=(4, 6, 6, 6, 4)):
    torch.manual_seed(seed)
    return zfnet(num_classes=3, widths=widths, fc=8, pool5_size=1).eval()


def save(path, model, epoch=None, widths=(4, 6, 6, 6, 4), size=64):
    kwargs = {"num_classes": 3, "widths": list(widths), "fc": 8, "pool5_size": 1}
    return save_checkpoint(path, model, arch="zfnet", arch_kwargs=kwargs, input_size=(3, size, size),
                           mean=(0.5,) * 3, std=(0.25,) * 3, extra={} if epoch is None else {"epoch": epoch})


def test_a_folder_is_sorted_by_epoch_number_not_by_name(tmp_path):
    images = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    for epoch in (10, 2, 1):
        save(tmp_path / f"epoch_{epoch}.pt", make_model(epoch), epoch)
    (tmp_path / "other.pt").write_bytes(b"not a checkpoint")  # ignored: not epoch_*.pt
    result = feature_evolution(tmp_path, images, layers="conv1", channels=[0])
    assert result.epochs == [1, 2, 10]
    assert [p.rsplit("/", 1)[-1] for p in result.sources] == ["epoch_1.pt", "epoch_2.pt", "epoch_10.pt"]
    for k, epoch in enumerate((1, 2, 10)):
        best, _ = brute_force(make_model(epoch), images, "features.0")
        assert float(result.activation[0, k]) == pytest.approx(best[0][0], rel=1e-5)

    names_only = tmp_path / "names"  # no epoch stored: the number in the name orders and labels them
    for epoch in (12, 3):
        save(names_only / f"epoch_{epoch}.pt", make_model(epoch))
    assert feature_evolution(names_only, images, layers="conv1", channels=[0]).epochs == [3, 12]


def test_loaded_models_are_numbered_and_left_as_they_were(tmp_path):
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    a, b = make_model(1), make_model(2)
    b.train()
    before = [p.detach().clone() for p in b.parameters()]
    result = feature_evolution([a, b], images, layers="conv2", maps=2)
    assert result.epochs == [1, 2] and result.sources == ["model 0", "model 1"]
    assert b.training and all(m.training for m in b.modules())
    assert all(torch.equal(p, q) for p, q in zip(before, b.parameters()))
    assert feature_evolution([a, b], images, layers="conv2", maps=2, epochs=[5, 40]).epochs == [5, 40]
    # default maps: the strongest at the last checkpoint, strongest first
    best, _ = brute_force(b.eval(), images, "features.4")
    assert result.channels.tolist() == sorted(best, key=lambda c: (-best[c][0], c))[:2]


def test_checkpoints_of_different_architectures_are_refused(tmp_path):
    images = torch.randn(2, 3, 64, 64)
    first = save(tmp_path / "epoch_001.pt", make_model(1), 1)
    wider = save(tmp_path / "wide" / "epoch_002.pt", make_model(2, (4, 8, 6, 6, 4)), 2, widths=(4, 8, 6, 6, 4))
    with pytest.raises(IntrospectError, match=r"does not match .*epoch_001.pt: features.4.weight of shape"):
        feature_evolution([first, wider], images, layers="conv1")
    bigger = save(tmp_path / "big" / "epoch_002.pt", make_model(2), 2, size=96)
    with pytest.raises(IntrospectError, match="input size 3x96x96 instead of 3x64x64"):
        feature_evolution([first, bigger], images, layers="conv1")
    with pytest.raises(IntrospectError, match="epoch_001.pt does not match model 0"):  # loaded models too
        feature_evolution([make_model(3, (4, 8, 6, 6, 4)), first], images, layers="conv1")


@pytest.mark.parametrize("args, message", [
    (([],), "no checkpoints given"),
    (("missing_folder",), "checkpoint not found"),
    (("empty",), "no epoch_\\*.pt checkpoints in folder"),
    (("ok", "conv9"), "unknown layer 'conv9'"),
    (("ok", "conv1", [4]), "channel 4 does not exist in layer 'conv1'"),
    (("ok", "conv1", [-1]), "channel -1 is not a feature map"),
    (("ok", "conv1", []), "channels is empty"),
    (("ok", "conv1", None, 0), "maps must be a positive integer"),
])
def test_bad_inputs_give_one_line_errors(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    save(tmp_path / "ok" / "epoch_001.pt", make_model(1), 1)
    where = {"ok": tmp_path / "ok", "empty": tmp_path / "empty", "missing_folder": tmp_path / "nope"}
    first = where.get(args[0], args[0]) if isinstance(args[0], str) else args[0]
    with pytest.raises(IntrospectError, match=message) as info:
        feature_evolution(first, torch.randn(2, 3, 64, 64), **dict(zip(("layers", "channels", "maps"), args[1:])))
    assert "\n" not in str(info.value)


def test_one_image_without_a_batch_dimension_is_a_one_line_error():
    with pytest.raises(IntrospectError, match=r"\(N, C, H, W\), got shape \(3, 64, 64\)") as info:
        feature_evolution([make_model(1)], torch.randn(3, 64, 64), layers="conv2", maps=1)
    assert "\n" not in str(info.value)


def test_channels_as_numpy_or_tensor_integers_are_the_same_maps():
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    models = [make_model(1), make_model(2)]
    listed = feature_evolution(models, images, layers="conv2", channels=[4, 1])
    for given in (np.array([4, 1]), torch.tensor([4, 1])):
        got = feature_evolution(models, images, layers="conv2", channels=given)
        assert got.channels.tolist() == [4, 1]
        assert torch.equal(got.activation, listed.activation) and torch.equal(got.image_index, listed.image_index)
    single = feature_evolution(models, images, layers="conv2", channels=np.int64(1))
    assert single.channels.tolist() == [1] and torch.equal(single.activation, listed.activation[1:])
    with pytest.raises(IntrospectError, match="channel 1.5 is not a feature map"):
        feature_evolution(models, images, layers="conv2", channels=[1.5])


def test_a_file_without_an_architecture_is_not_answered_with_an_option_it_lacks(tmp_path):
    plain = tmp_path / "epoch_002.pt"
    torch.save(make_model(2).state_dict(), plain)
    with pytest.raises(IntrospectError, match="epoch_002.pt does not name its architecture") as info:
        feature_evolution([save(tmp_path / "epoch_001.pt", make_model(1), 1), plain], torch.randn(2, 3, 64, 64),
                          layers="conv1", channels=[0])
    assert "--arch" not in str(info.value) and "introspect.load_model(path, arch)" in str(info.value)


def test_an_image_folder_kept_in_memory_gives_what_streaming_it_gives(tmp_path, monkeypatch):
    from introspect.cli import bundled_image_dir
    from introspect.images import ImageFolderDataset, Preprocess
    from introspect_evolution import method

    for epoch in (1, 2):
        save(tmp_path / f"epoch_{epoch}.pt", make_model(epoch), epoch)
    folder = ImageFolderDataset(
        bundled_image_dir(), Preprocess.from_meta(load_model(tmp_path / "epoch_1.pt").introspect_meta)
    )
    kept = method.in_memory(folder)
    assert isinstance(kept, torch.Tensor) and kept.shape == (10, 3, 64, 64)
    torch.testing.assert_close(kept[7], folder[7][0], rtol=0, atol=0)
    assert method.in_memory(folder, budget=kept.numel() * 4 - 1) is folder
    in_memory = feature_evolution(tmp_path, folder, layers="conv2", maps=3)
    monkeypatch.setattr(method, "IN_MEMORY_BYTES", 0)
    streamed = feature_evolution(tmp_path, folder, layers="conv2", maps=3)
    assert streamed.image_names == in_memory.image_names and len(streamed.image_names) >= 1
    assert all(name.endswith(".png") for name in streamed.image_names.values())
    assert torch.equal(streamed.image_index, in_memory.image_index)
    torch.testing.assert_close(streamed.projections, in_memory.projections)


def test_save_writes_figures_arrays_csv_and_json(run, data, tmp_path):
    result = feature_evolution(run, data, layers=["conv1", "conv4"], maps=3)
    files = result.save(tmp_path / "out")
    names = sorted(p.name for p in files)
    assert names == ["evolution.csv", "evolution.png", "evolution_conv1.npy", "evolution_conv1.png",
                     "evolution_conv4.npy", "evolution_conv4.png", "result.json"]
    for entry in result.layers:
        np.testing.assert_array_equal(np.load(tmp_path / "out" / f"evolution_{entry.name}.npy"),
                                      entry.projections.numpy())
    lines = (tmp_path / "out" / "evolution.csv").read_text().splitlines()
    assert lines[0].startswith("layer,map,epoch,activation,image,image_name,y,x,")
    assert len(lines) == 1 + 2 * 3 * 3
    layer, channel, epoch, activation, image = lines[1 + 3 * 1 + 2].split(",")[:5]  # conv1, 2nd map, 3rd epoch
    entry = result["conv1"]
    assert (layer, int(channel), int(epoch), int(image)) == ("conv1", int(entry.channels[1]), 3,
                                                             int(entry.image_index[1, 2]))
    assert float(activation) == pytest.approx(float(entry.activation[1, 2]))
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    assert doc["epochs"] == [1, 2, 3] and doc["layers"][1]["name"] == "conv4"
    row = doc["layers"][0]["maps"][1]["epochs"][2]
    assert row["image"] == int(entry.image_index[1, 2]) and row["box"] == entry.boxes[1, 2].tolist()
    # the summaries are what their names say
    assert doc["layers"][0]["mean_activation"] == pytest.approx(entry.activation.mean(0).tolist())
    same = (entry.image_index == entry.image_index[:, 2:]).float().mean(0).tolist()
    assert doc["layers"][0]["same_image_as_last"] == same and same[-1] == 1.0


def test_the_grid_has_a_row_per_map_and_a_column_per_epoch(run, data):
    from PIL import Image

    from introspect_evolution.figure import MIN_TILE, layer_figure, tile

    result = feature_evolution(run, data, layers="conv1", maps=2)
    picture = layer_figure(result.layers[0], result.epochs)
    factor = -(-MIN_TILE // 7)  # conv1's 7 x 7 field, enlarged to at least MIN_TILE pixels
    assert picture.shape[1] >= 3 * 7 * factor and picture.shape[0] >= 2 * 7 * factor
    assert picture.shape[1] < 4 * 7 * factor and picture.shape[0] < 3 * 7 * factor + 80
    one = tile(torch.tensor([[[0.0, 2.0], [-1.0, 0.0]]] * 3), [0, 0, 2, 2], 3)
    assert one.shape == (6, 6, 3) and one[0, 0, 0] == 128 and one[0, 5, 0] == 255 and one[5, 0, 0] == 64
    assert Image.fromarray(picture).size == (picture.shape[1], picture.shape[0])


def test_registered_as_a_method(run, data):
    assert introspect.feature_evolution is feature_evolution
    assert "feature_evolution" in introspect.methods()
    result = introspect.methods()["feature_evolution"].func(sorted(run.glob("epoch_*.pt"))[:1], data, maps=1)
    assert isinstance(result, EvolutionResult) and result.epochs == [1] and result.projections.shape[:2] == (1, 1)


def test_without_the_deconv_plugin_it_is_a_one_line_error_naming_the_missing_method():
    from introspect.manager import get_plugin_manager

    pm = get_plugin_manager()
    deconv = pm.get_plugin("deconv")
    pm.unregister(deconv)
    try:
        with pytest.raises(IntrospectError, match=r"feature evolution needs the method 'top_k'") as info:
            feature_evolution([make_model(1)], torch.randn(2, 3, 64, 64), layers="conv2", maps=1)
        assert "\n" not in str(info.value)
    finally:
        pm.register(deconv, name="deconv")
    assert "top_k" in introspect.methods()
    result = feature_evolution([make_model(1)], torch.randn(2, 3, 64, 64), layers="conv2", maps=1)
    assert result.layers[0].activation.shape == (1, 1)
