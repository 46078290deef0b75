"""The paper's training recipe (introspect.training), the `introspect train` command, the ZFNet
ablation variants and the bundled trained model."""
from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import introspect
import introspect.training.loop as loop_mod
from conftest import invoke
from introspect.errors import IntrospectError
from introspect.models import load_model, meta_of
from introspect.models.load import bundled_checkpoint
from introspect.models.zfnet import ZFNET_ALIASES, pool5_size_for, zfnet
from introspect.training import (
    BatchTransform,
    LRSchedule,
    TensorImageDataset,
    TrainConfig,
    fashion_mnist,
    init_paper,
    renormalize_filters,
    train_model,
)

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
TINY = ["--widths", "4,8,8,8,4", "--fc", "8", "--input-size", "32", "--arch-arg", "conv2_stride=1",
        "--arch-arg", "conv2_padding=2", "--init-std", "0.1"]


def run_cli(*args, ok=True):
    result = invoke(*args)
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Two classes of tiny PNGs (bright and dark noise, different sizes)."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for name, base in (("bright", 190), ("dark", 60)):
        (root / name).mkdir()
        for i in range(6):
            a = np.clip(base + rng.normal(0, 25, (18 + i, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(root / name / f"{i}.png")
    return root


# --------------------------------------------------------------------------------------------------
# filter renormalization
# --------------------------------------------------------------------------------------------------
def test_renormalize_filters_by_hand():
    conv = nn.Conv2d(1, 3, kernel_size=2, bias=True)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([
            [[[1.0, 1.0], [1.0, 1.0]]],          # RMS 1 -> all 0.1
            [[[0.3, 0.0], [0.0, 0.0]]],          # RMS 0.15 -> [0.2, 0, 0, 0]
            [[[0.05, -0.05], [0.1, 0.0]]],       # RMS sqrt(0.015/4) = 0.0612 -> untouched
        ]))
        conv.bias.copy_(torch.tensor([5.0, -5.0, 1.0]))
    small = conv.weight[2].clone()
    assert renormalize_filters(conv, 0.1) == 2
    expected = torch.tensor([[[[0.1, 0.1], [0.1, 0.1]]], [[[0.2, 0.0], [0.0, 0.0]]], [[[0.05, -0.05], [0.1, 0.0]]]])
    torch.testing.assert_close(conv.weight.detach(), expected)
    assert torch.equal(conv.weight[2], small)  # bit for bit
    assert conv.bias.tolist() == [5.0, -5.0, 1.0]


def test_renormalize_filters_matches_a_loop_and_skips_linear():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 5), nn.Conv2d(16, 8, 3, groups=2), nn.Flatten(), nn.Linear(8, 4))
    with torch.no_grad():
        for m in net:
            if hasattr(m, "weight"):
                m.weight.mul_(torch.rand(m.weight.shape[0], *([1] * (m.weight.dim() - 1))) * 3)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    count = renormalize_filters(net, 0.1)
    expected_count = 0
    for name in ("0.weight", "1.weight"):
        got = dict(net.named_parameters())[name]
        for o in range(got.shape[0]):
            w = before[name][o]
            rms = float(np.sqrt(np.mean(w.double().numpy() ** 2)))
            if rms > 0.1:
                expected_count += 1
                np.testing.assert_allclose(got[o].detach().numpy(), w.numpy() * (0.1 / rms), rtol=1e-5, atol=1e-8)
            else:
                assert torch.equal(got[o], w)
    assert count == expected_count > 0
    for name in ("0.bias", "1.bias", "3.weight", "3.bias"):
        assert torch.equal(dict(net.named_parameters())[name], before[name])


def test_every_training_step_renormalizes(monkeypatch, tmp_path):
    """In the training loop, after every step, each conv filter's RMS is <= 0.1, filters that were under
    the radius are exactly as the optimizer left them, the others are scaled by 0.1 / RMS."""
    original = loop_mod.renormalize_filters
    calls = []

    def checked(model, radius):
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        before = [c.weight.detach().clone() for c in convs]
        count = original(model, radius)
        over = 0
        for conv, w in zip(convs, before):
            rms = w.pow(2).flatten(1).mean(1).sqrt()
            after = conv.weight.detach()
            assert float(after.pow(2).flatten(1).mean(1).sqrt().max()) <= radius * (1 + 1e-5)
            for o in range(len(w)):
                if rms[o] <= radius:
                    assert torch.equal(after[o], w[o])
                else:
                    over += 1
                    torch.testing.assert_close(after[o], w[o] * (radius / rms[o]))
        assert count == over
        calls.append(over)
        return count

    monkeypatch.setattr(loop_mod, "renormalize_filters", checked)
    torch.manual_seed(0)
    kwargs = dict(num_classes=2, widths=(4, 6, 6, 6, 4), fc=8, conv2_stride=1, conv2_padding=2)
    kwargs["pool5_size"] = pool5_size_for(32, **kwargs)
    model = init_paper(zfnet(**kwargs), 0.3)
    data = TensorImageDataset(torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8), [0, 1] * 10, ["a", "b"])
    config = TrainConfig(epochs=1, batch_size=5, lr=0.05, crop_pad=2)
    result = train_model(model, data, arch="zfnet", arch_kwargs=kwargs, input_size=(3, 32, 32), mean=(0.5,) * 3,
                         std=(0.3,) * 3, out=tmp_path, config=config)
    assert len(calls) == 4 and sum(calls) > 0
    assert result.history[0]["renormalized"] == sum(calls)


@torch.no_grad()
def test_init_paper():
    net = init_paper(zfnet(num_classes=10, widths=(32, 32, 32, 32, 32), fc=64), 0.01,
                     generator=torch.Generator().manual_seed(0))
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert float(m.bias.abs().max()) == 0.0
            assert abs(float(m.weight.std()) - 0.01) < 0.002 and abs(float(m.weight.mean())) < 0.001


def test_tied_input_channels_stay_equal_on_grey_data():
    from introspect.training import tie_input_channels

    torch.manual_seed(0)
    net = init_paper(zfnet(num_classes=3, widths=(4, 6, 6, 6, 4), fc=8, pool5_size=pool5_size_for(96)), 0.05)
    grey_response = net.features[0].weight.detach().sum(1).std()
    tie_input_channels(net)
    w = net.features[0].weight
    assert torch.equal(w[:, 0], w[:, 1]) and torch.equal(w[:, 1], w[:, 2])
    assert abs(float(w.detach().sum(1).std() / grey_response) - 1) < 0.2  # same spread on grey input
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        x = torch.randn(4, 1, 96, 96).expand(-1, 3, -1, -1)
        loss = F.cross_entropy(net(x), torch.tensor([0, 1, 2, 0]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        renormalize_filters(net)
    assert torch.equal(w[:, 0], w[:, 1]) and torch.equal(w[:, 1], w[:, 2]) and float(w[:, 0].detach().abs().sum()) > 0


# --------------------------------------------------------------------------------------------------
# schedule, augmentation
# --------------------------------------------------------------------------------------------------
def test_lr_schedule_steps_and_plateau():
    s = LRSchedule(0.01, steps=(2, 4), gamma=0.1)
    assert [s.step(e) for e in (1, 2, 3, 4, 5)] == pytest.approx([0.01, 0.001, 0.001, 0.0001, 0.0001])
    p = LRSchedule(1.0, plateau=True, patience=1, gamma=0.5)
    lrs = [p.step(e, loss) for e, loss in enumerate([5.0, 4.0, 4.0, 4.0, 3.0, 3.5, 3.5], start=1)]
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    q = LRSchedule(0.1)
    q.load_state_dict(p.state_dict())
    assert q.state_dict() == p.state_dict()


def test_batch_transform_crops_and_flips_like_a_loop():
    x = torch.randint(0, 256, (6, 1, 10, 10), dtype=torch.uint8)
    t = BatchTransform((3, 10, 10), (0.5, 0.4, 0.3), (0.2, 0.25, 0.5), pad=2, flip=True)
    got = t(x, train=True, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    dy, dx = torch.randint(0, 5, (6,), generator=g), torch.randint(0, 5, (6,), generator=g)
    mirror = torch.rand(6, generator=g) < 0.5
    padded = F.pad(x.float() / 255, (2, 2, 2, 2), mode="reflect").repeat(1, 3, 1, 1)
    for i in range(6):
        crop = padded[i, :, dy[i]:dy[i] + 10, dx[i]:dx[i] + 10]
        crop = crop.flip(-1) if mirror[i] else crop
        ref = (crop - torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1)) / torch.tensor([0.2, 0.25, 0.5]).view(3, 1, 1)
        torch.testing.assert_close(got[i], ref)
    plain = t(x)  # evaluation: no crop, no flip
    torch.testing.assert_close(plain[:, 1], (x[:, 0].float() / 255 - 0.4) / 0.25)


def test_batch_transform_resize_matches_the_commands_preprocessing(tmp_path):
    """Training upsamples 28x28 tensors; the commands upsample the PNG with PIL: the same input."""
    from introspect.images import Preprocess, preprocess_image

    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    Image.fromarray(a, "L").save(tmp_path / "x.png")
    mean, std = (0.286,) * 3, (0.353,) * 3
    pil = preprocess_image(tmp_path / "x.png", Preprocess((3, 64, 64), mean, std))[0]
    ours = BatchTransform((3, 64, 64), mean, std)(torch.from_numpy(a)[None, None])[0]
    assert float((pil - ours).abs().max()) * 0.353 <= 1.01 / 255  # within PIL's rounding to 8 bits


# --------------------------------------------------------------------------------------------------
# the command
# --------------------------------------------------------------------------------------------------
def test_train_command_checkpoints_and_resume(image_folder, tmp_path):
    full, half = tmp_path / "full", tmp_path / "half"
    run_cli("train", image_folder, *TINY, "--epochs", "2", "--batch-size", "4", "--out", full)
    for epoch in (1, 2):
        ckpt = torch.load(full / f"epoch_{epoch:03d}.pt", weights_only=True)
        assert ckpt["arch"] == "zfnet" and ckpt["classes"] == ["bright", "dark"]
        assert ckpt["input_size"] == [3, 32, 32] and len(ckpt["mean"]) == 3
        extra = ckpt["extra"]
        assert extra["epoch"] == epoch and len(extra["metrics"]) == epoch and extra["config"]["batch_size"] == 4
        assert extra["optimizer"]["param_groups"][0]["momentum"] == 0.9
    model = load_model(full / "epoch_002.pt")
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 2) and meta_of(model).classes == ["bright", "dark"]
    assert (full / "conv1_filters.png").exists() and json.loads((full / "metrics.json").read_text())["last"][
        "epoch"
    ] == 2

    # epoch 1, then resume for epoch 2 elsewhere: the very same weights and momentum buffers
    run_cli("train", image_folder, *TINY, "--epochs", "1", "--batch-size", "4", "--out", half)
    run_cli("train", image_folder, "--resume", half / "epoch_001.pt", "--epochs", "2")
    a = torch.load(full / "epoch_002.pt", weights_only=True)
    b = torch.load(half / "epoch_002.pt", weights_only=True)
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    sa, sb = a["extra"]["optimizer"]["state"], b["extra"]["optimizer"]["state"]
    assert sorted(sa) == sorted(sb) and len(sa) == len(a["state_dict"])
    for index in sa:
        assert torch.equal(sa[index]["momentum_buffer"], sb[index]["momentum_buffer"])
    timeless = [{k: v for k, v in ckpt["extra"]["metrics"][0].items() if k != "seconds"} for ckpt in (a, b)]
    assert timeless[0] == timeless[1]

    # the momentum really matters: resuming without it ends elsewhere
    broken = torch.load(half / "epoch_001.pt", weights_only=True)
    for state in broken["extra"]["optimizer"]["state"].values():
        state["momentum_buffer"].zero_()
    torch.save(broken, tmp_path / "broken.pt")
    run_cli("train", image_folder, "--resume", tmp_path / "broken.pt", "--epochs", "2", "--out", tmp_path / "broken")
    c = torch.load(tmp_path / "broken" / "epoch_002.pt", weights_only=True)
    assert not torch.equal(c["state_dict"]["features.0.weight"], a["state_dict"]["features.0.weight"])


def test_resume_lowers_the_rate_by_hand_and_refuses_new_architecture(image_folder, tmp_path):
    run_cli("train", image_folder, *TINY, "--epochs", "1", "--batch-size", "6", "--out", tmp_path)
    result = run_cli(
        "train", image_folder, "--resume", tmp_path / "epoch_001.pt", "--epochs", "2", "--lr", "0.001", "--json"
    )
    assert [row["lr"] for row in json.loads(result.stdout)["history"]] == [0.01, 0.001]
    bad = run_cli("train", image_folder, "--resume", tmp_path / "epoch_001.pt", "--widths", "8,8,8,8,8", ok=False)
    assert bad.exit_code == 1 and "--widths cannot change when resuming" in bad.output and "Traceback" not in bad.output


def test_train_in_python_fits_pool5_checks_resume_and_matches_the_command(image_folder, tmp_path):
    """``introspect.train`` is the command's run: the same checkpoint for the same options, the pool5 size
    fitted to the input (checked against pool5_size_for), and a resumed run that keeps its recipe."""
    kwargs = {"widths": [4, 8, 8, 8, 4], "fc": 8, "conv2_stride": 1, "conv2_padding": 2}
    calls = []
    api = introspect.train("zfnet", image_folder, out=tmp_path / "api", arch_kwargs=kwargs, input_size=(3, 32, 32),
                           init_std=0.1, epochs=1, batch_size=6, progress=lambda *a: calls.append(a))
    assert calls == [("epoch 1/1", 0, 2), ("epoch 1/1", 1, 2), ("epoch 1/1", 2, 2)]  # 12 images, batches of 6
    run_cli("train", image_folder, *TINY, "--epochs", "1", "--batch-size", "6", "--out", tmp_path / "cli")
    a = torch.load(tmp_path / "api" / "epoch_001.pt", weights_only=True)
    b = torch.load(tmp_path / "cli" / "epoch_001.pt", weights_only=True)
    assert a["arch_kwargs"] == b["arch_kwargs"] and a["mean"] == b["mean"]
    assert a["arch_kwargs"]["pool5_size"] == pool5_size_for(32, **kwargs)
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert api.checkpoints == [tmp_path / "api" / "epoch_001.pt"] and api.last["epoch"] == 1

    resume = tmp_path / "api" / "epoch_001.pt"
    with pytest.raises(IntrospectError, match="batch_size 5 differs from the checkpoint's 6"):
        introspect.train(None, image_folder, resume=resume, epochs=2, batch_size=5)
    with pytest.raises(IntrospectError, match="arch_kwargs cannot change when resuming"):
        introspect.train(None, image_folder, resume=resume, epochs=2, arch_kwargs={"fc": 16})
    more = introspect.train(None, image_folder, resume=resume, epochs=2, lr=0.001)
    assert [row["lr"] for row in more.history] == [0.01, 0.001] and more.checkpoints[-1].name == "epoch_002.pt"


def test_table3_ablation_options(image_folder, tmp_path):
    run_cli(
        "train", image_folder, *TINY, "--drop-layers", "conv3,conv4,fc7", "--no-lrn", "--epochs", "1", "--out", tmp_path
    )
    model = load_model(tmp_path / "epoch_001.pt")
    names = dict(model.named_modules())
    assert "features.8" not in names and "features.10" not in names and "classifier.4" not in names
    assert isinstance(names["features.3"], nn.Identity) and names["features.12"].in_channels == 8
    assert set(model.layer_aliases) == set(ZFNET_ALIASES) - {"conv3", "relu3", "conv4", "relu4", "fc7", "relu7"}
    assert all(name in names for name in model.layer_aliases.values())


def test_train_command_errors(image_folder, tmp_path):
    cases = [
        (["train", tmp_path / "missing"], "data folder not found"),
        (["train", image_folder, "--drop-layers", "conv1", "--input-size", "32"], "cannot remove layer(s) conv1"),
        (["train", image_folder, "--input-size", "12"], "does not fit architecture"),
        (["train", image_folder, "--resume", tmp_path / "none.pt"], "checkpoint to resume from not found"),
        (["train", image_folder / "dark"], "no class subfolders"),
    ]
    for args, message in cases:
        result = run_cli(*args, ok=False)
        assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output, result.output


def _write_idx(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, len(images), 28, 28) + images.tobytes())
    with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, len(labels)) + labels.tobytes())


def test_fashion_mnist_idx_files_through_the_command(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "idx"
    data.mkdir()
    train_images = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    train_labels = np.arange(12, dtype=np.uint8) % 10
    test_images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    test_labels = np.array([9, 0, 3, 3, 7], dtype=np.uint8)
    _write_idx(data, "train", train_images, train_labels)
    _write_idx(data, "t10k", test_images, test_labels)

    train, test = fashion_mnist(data, tmp_path / "cache")
    assert train.classes == FASHION_CLASSES
    np.testing.assert_array_equal(train.images[:, 0].numpy(), train_images)
    np.testing.assert_array_equal(test.targets.numpy(), test_labels)
    assert (tmp_path / "cache" / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").is_file()

    out = tmp_path / "run"
    result = run_cli("train", data, *TINY, "--epochs", "1", "--batch-size", "5", "--out", out, "--json")
    row = json.loads(result.stdout)["history"][0]
    assert "test_acc" in row and row["test_acc"] * 5 == round(row["test_acc"] * 5)
    ckpt = torch.load(out / "epoch_001.pt", weights_only=True)
    assert ckpt["classes"] == FASHION_CLASSES and ckpt["input_size"] == [3, 32, 32]
    grey = train_images.astype(np.float64) / 255
    assert ckpt["mean"] == pytest.approx([round(grey.mean(), 4)] * 3) and ckpt["std"] == pytest.approx(
        [round(grey.std(), 4)] * 3
    )

    (data / "t10k-labels-idx1-ubyte.gz").unlink()
    bad = run_cli("train", data, *TINY, "--out", tmp_path / "bad", ok=False)
    assert bad.exit_code == 1 and "t10k-labels-idx1-ubyte" in bad.output


# --------------------------------------------------------------------------------------------------
# ZFNet variants
# --------------------------------------------------------------------------------------------------
def test_zfnet_default_is_still_the_paper_network():
    net = zfnet()
    assert net.layer_aliases == ZFNET_ALIASES and pool5_size_for(224) == 6
    x = torch.zeros(1, 3, 224, 224)
    sizes = []
    for module in net.features:
        x = module(x)
        sizes.append(x.shape[-1])
    assert sizes == [110, 110, 55, 55, 26, 26, 13, 13, 13, 13, 13, 13, 13, 13, 6]


@pytest.mark.parametrize(
    "size,kwargs",
    [
        (64, dict(conv1_padding=3, conv2_stride=1, conv2_padding=2)),
        (100, {}),
        (65, {}),
        (33, dict(conv1_kernel=5, conv1_stride=1, conv1_padding=2)),
    ],
)
def test_pool5_size_for_matches_a_forward_pass(size, kwargs):
    n = pool5_size_for(size, **kwargs)
    net = zfnet(num_classes=3, widths=(4, 4, 4, 4, 4), fc=4, pool5_size=n, **kwargs)
    assert net.features(torch.zeros(1, 3, size, size)).shape[-1] == n
    assert net(torch.zeros(1, 3, size, size)).shape == (1, 3)


# --------------------------------------------------------------------------------------------------
# the bundled model
# --------------------------------------------------------------------------------------------------
def test_bundled_checkpoint_classifies_the_bundled_images():
    from introspect.cli import bundled_image_dir
    from introspect.images import Preprocess, load_images

    path = bundled_checkpoint()
    assert path.stat().st_size <= 20 * 2**20
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["arch"] == "zfnet" and ckpt["classes"] == FASHION_CLASSES and ckpt["input_size"][0] == 3
    assert len(set(ckpt["mean"])) == 1 and len(set(ckpt["std"])) == 1
    # measured on the 10,000 test images: 0.896 (the data set's published convnet baselines are ~0.91)
    assert ckpt["extra"]["metrics"][-1]["test_acc"] > 0.885

    model = load_model()  # no arguments: the bundled model
    labels = json.loads((bundled_image_dir() / "labels.json").read_text())
    files = sorted(bundled_image_dir().glob("*.png"))
    assert 6 <= len(files) == len(labels)
    for f in files:
        assert labels[f.name] in FASHION_CLASSES
        slug = labels[f.name].lower().replace("/", "_").replace("-", "_").replace(" ", "_")
        assert slug in f.name
        assert Image.open(f).size == (28, 28)
    x = load_images(files, Preprocess.from_meta(meta_of(model)))
    assert x.shape == (len(files), *ckpt["input_size"])
    conv1 = model.features[0].weight
    assert torch.equal(conv1[:, 0], conv1[:, 1]) and torch.equal(conv1[:, 0], conv1[:, 2])  # grey filters
    with torch.no_grad():
        predicted = model(x).argmax(1).tolist()
    assert [FASHION_CLASSES[i] for i in predicted] == [labels[f.name] for f in files]


# --------------------------------------------------------------------------------------------------
# run folders (introspect.output.RunFolder)
# --------------------------------------------------------------------------------------------------
def test_train_into_an_earlier_run_is_refused_without_resume_or_force(image_folder, tmp_path):
    from introspect.output import read_manifest

    out = tmp_path / "run"
    run_cli("train", image_folder, *TINY, "--epochs", "2", "--batch-size", "6", "--out", out)
    manifest = read_manifest(out)
    assert manifest["kind"] == "run" and manifest["finished"] and manifest["epochs"] == 2
    assert manifest["files"] == ["conv1_filters.png", "epoch_001.pt", "epoch_002.pt", "metrics.json"]
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    bad = run_cli("train", image_folder, *TINY, "--epochs", "1", "--out", out, ok=False)
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    assert "holds a finished training run (2 epochs)" in bad.output and "--force" in bad.output, bad.output
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    # --force replaces the run: no stale epoch_002.pt beside the new epoch_001.pt
    run_cli("train", image_folder, *TINY, "--epochs", "1", "--batch-size", "6", "--out", out, "--force")
    assert sorted(p.name for p in out.glob("epoch_*.pt")) == ["epoch_001.pt"]
    assert json.loads((out / "metrics.json").read_text())["last"]["epoch"] == 1
    # a folder of the user's is refused even with --force; nothing written there (no data cache)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    for extra in ([], ["--force"]):
        bad = run_cli("train", image_folder, *TINY, "--epochs", "1", "--out", mine, *extra, ok=False)
        assert bad.exit_code == 1 and "did not write" in bad.output and "notes.txt" in bad.output, bad.output
        assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    # the output of another command is no run folder either
    from introspect.output import OutputDir
    with OutputDir(tmp_path / "top", command="introspect top") as od:
        od.save_text("top.json", "{}")
    bad = run_cli("train", image_folder, *TINY, "--epochs", "1", "--out", tmp_path / "top", ok=False)
    assert "holds the output of introspect top" in bad.output


def test_resume_without_epochs_runs_to_the_checkpoints_own_target(image_folder, tmp_path):
    run_cli("train", image_folder, *TINY, "--epochs", "2", "--batch-size", "6", "--out", tmp_path / "a")
    run_cli("train", image_folder, "--resume", tmp_path / "a" / "epoch_001.pt", "--out", tmp_path / "b")
    assert sorted(p.name for p in (tmp_path / "b").glob("epoch_*.pt")) == ["epoch_002.pt"]
    # resuming in the run's own folder (unfinished or finished) is allowed
    result = run_cli("train", image_folder, "--resume", tmp_path / "a" / "epoch_002.pt", "--epochs", "3", "--json")
    assert json.loads(result.stdout)["last"]["epoch"] == 3
    from introspect.output import read_manifest
    manifest = read_manifest(tmp_path / "a")
    assert manifest["finished"] and manifest["epochs"] == 3 and "epoch_003.pt" in manifest["files"]


def test_checkpoints_are_written_atomically_one_by_one(image_folder, tmp_path, monkeypatch):
    """A failure while writing epoch 2 (a full disk) leaves epoch 1 whole, no partial file, and an
    unfinished run that --resume continues."""
    import errno as errno_

    from introspect.models import load as load_mod

    real = load_mod.save_checkpoint
    calls = []

    def failing(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            with open(path, "wb") as f:
                f.write(b"half a checkpoint")
            raise OSError(errno_.ENOSPC, "No space left on device")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(load_mod, "save_checkpoint", failing)
    out = tmp_path / "run"
    bad = run_cli("train", image_folder, *TINY, "--epochs", "2", "--batch-size", "6", "--out", out, ok=False)
    monkeypatch.undo()
    assert bad.exit_code == 1 and "no space left on the disk" in bad.output and "Traceback" not in bad.output
    assert sorted(p.name for p in out.iterdir() if p.name != "data") == [
        ".introspect-manifest.json", "conv1_filters.png", "epoch_001.pt", "metrics.json"]
    assert load_model(out / "epoch_001.pt") is not None
    bad = run_cli("train", image_folder, *TINY, "--epochs", "2", "--out", out, ok=False)
    assert "holds an unfinished training run" in bad.output and "--resume" in bad.output
    run_cli("train", image_folder, "--resume", out / "epoch_001.pt")
    assert (out / "epoch_002.pt").exists()
