"""Feature generalization (Table 7): probes, sampling, features, against independent references."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import introspect
from introspect.core.attach import same_snapshot, snapshot
from introspect.errors import IntrospectError
from introspect_generalization.features import default_layers, extract, pool_size, resolve_layers
from introspect_generalization.probes import fit, row_space
from introspect_generalization.sampling import class_index, per_class_splits


class OneHot(nn.Module):
    """The label written into pixel (0, 0) of the image (as label / (k - 1)), one-hot."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x):
        return nn.functional.one_hot((x[:, 0, 0, 0] * (self.k - 1)).round().long(), self.k).float()


class Coded(nn.Module):
    """Layer ``code`` carries the label perfectly, layer ``noise`` (the other rows) carries nothing."""

    def __init__(self, k: int):
        super().__init__()
        self.code = OneHot(k)
        self.noise = nn.Flatten()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return self.code(x), self.noise(x[:, :, 1:] * self.scale)


def coded_data(k: int = 4, per: int = 30, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(k).repeat_interleave(per)
    images = torch.rand(len(labels), 1, 6, 6, generator=gen)
    images[:, 0, 0, 0] = labels / (k - 1)
    return images, labels


def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.images, dtype=torch.float32).unsqueeze(1), torch.tensor(d.target)


def test_label_carrying_layer_is_perfect_and_noise_layer_is_at_chance():
    model = Coded(4).train()
    before = snapshot(model)
    result = introspect.feature_generalization(model, coded_data(), layers=["code", "noise"], per_class=5,
                                               repeats=2, seed=0, max_iter=50)
    assert result.accuracy.shape == (2, 2, 1) and result.accuracies.shape == (2, 2, 2, 1)
    assert torch.equal(result.accuracy[0], torch.ones(2, 1))  # both classifiers, every repeat
    assert result.test_sizes == [100, 100] and result.train_sizes == [20]
    noise = result.accuracy[1]
    assert (noise - result.chance).abs().max() < 0.15, noise  # chance is 0.25
    assert model.training and same_snapshot(before, snapshot(model))  # frozen, left as found


def test_softmax_and_svm_agree_with_sklearn_on_digits():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    images, labels = digits()
    flat = nn.Sequential(nn.Flatten())
    # 5/class: 50 training images < 64 pixels (the row-space path); 20/class: 200 > 64 (the plain path)
    result = introspect.feature_generalization(flat, (images, labels), layers=["0"], per_class=(5, 20), seed=3)
    x, y = images.reshape(len(images), -1).numpy().astype(np.float64), labels.numpy()
    test = result.test_index[0].numpy()
    for p, n in enumerate(result.per_class):
        train = result.train_index[0][p].numpy()
        scaler = StandardScaler().fit(x[train])
        xs, xt = scaler.transform(x[train]), scaler.transform(x[test])
        refs = {"softmax": LogisticRegression(C=1.0, max_iter=5000, tol=1e-6),
                "svm": LinearSVC(C=1.0, max_iter=20000, tol=1e-5, intercept_scaling=10)}
        for c, kind in enumerate(result.classifiers):
            expected = refs[kind].fit(xs, y[train]).score(xt, y[test])
            assert abs(float(result.accuracy[0, c, p]) - expected) < 0.01, (kind, n, expected)
        assert float(result.accuracy[0, 0, 1]) > 0.85  # digits are easy from pixels


def test_softmax_weights_equal_sklearn_when_features_outnumber_examples():
    from sklearn.linear_model import LogisticRegression

    images, labels = digits()
    x = images.reshape(len(images), -1)[:40].double()
    x = (x - x.mean(0)) / x.std(0, unbiased=False).clamp(min=1e-3)  # 64 features > 40 examples
    y = labels[:40]
    probe = fit("softmax", x, y, 10, C=0.5)
    ref = LogisticRegression(C=0.5, max_iter=10000, tol=1e-8).fit(x.numpy(), y.numpy())
    np.testing.assert_allclose(probe.weight.numpy(), ref.coef_.T, atol=2e-3 * np.abs(ref.coef_).max())
    coords, basis = row_space(x)
    torch.testing.assert_close(coords @ basis.T, x)
    torch.testing.assert_close(basis.T @ basis, torch.eye(basis.shape[1], dtype=torch.float64))


def test_per_class_splits_are_exact_disjoint_nested_and_seeded():
    labels = torch.tensor([0] * 12 + [1] * 7 + [2] * 9)
    splits = per_class_splits(labels, [2, 6], repeats=3, seed=5)
    for s in splits:
        for n in (2, 6):
            counts = torch.bincount(labels[s.train(n)], minlength=3)
            assert counts.tolist() == [n, n, n]
        assert set(s.train(2).tolist()) <= set(s.train(6).tolist())
        assert not set(s.train(6).tolist()) & set(s.test.tolist())
        assert sorted(s.train(6).tolist() + s.test.tolist()) == list(range(len(labels)))
    again = per_class_splits(labels, [2, 6], repeats=3, seed=5)
    assert all(torch.equal(a.train(6), b.train(6)) for a, b in zip(splits, again))
    other = per_class_splits(labels, [2, 6], repeats=3, seed=6)
    assert any(not torch.equal(a.train(6), b.train(6)) for a, b in zip(splits, other))
    assert not torch.equal(splits[0].train(6), splits[1].train(6))  # repeats draw anew
    with pytest.raises(IntrospectError, match="class '1' has 7 images"):
        per_class_splits(labels, [7])  # 7 for training leaves none to test
    assert per_class_splits(labels, [7], hold_out=False)[0].test is None


def test_default_layers_and_features_equal_a_manual_forward():
    model = introspect.load_model(None)
    assert default_layers(model) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"]
    mlp = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3))
    assert default_layers(mlp) == ["0", "3"]  # every Conv2d/Linear but the output layer
    x = torch.randn(5, 3, 32, 32)
    specs = resolve_layers(model, ["conv1", "fc6"], pixels=True)
    feats = extract(model, (x, torch.zeros(5)), torch.tensor([4, 1]), specs, batch_size=1, pool=4)
    with torch.no_grad():
        conv1 = model.features[0](x[[4, 1]]).clamp(min=0)
        fc6 = model.classifier[1](model.features(x[[4, 1]]).flatten(1)).clamp(min=0)
    blocks = conv1.reshape(2, 16, 4, 8, 4, 8).mean((3, 5)).flatten(1)  # 32x32 -> 4x4 block means
    torch.testing.assert_close(feats[0], x[[4, 1]].reshape(2, 3, 4, 8, 4, 8).mean((3, 5)).flatten(1))
    torch.testing.assert_close(feats[1], blocks, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(feats[2], fc6, rtol=1e-5, atol=1e-5)
    assert [s.dim for s in specs] == [48, 256, 256] and specs[1].pool == 4 and specs[2].pool is None


def test_pool_size_caps_large_maps():
    assert pool_size((96, 110, 110)) == 13  # 96 * 13 * 13 = 16224 <= 16384 < 96 * 14 * 14
    assert pool_size((16, 32, 32)) is None  # exactly 16384 values: kept whole
    assert pool_size((20000, 2, 2)) == 1
    assert pool_size((16, 32, 32), pool=4) == 4 and pool_size((16, 3, 3), pool=4) is None
    assert pool_size((4096,)) is None


def test_separate_test_set_and_class_names():
    images, labels = coded_data(k=3, per=10)
    test_images, test_labels = coded_data(k=3, per=4, seed=2)
    result = introspect.feature_generalization(Coded(3), (images, labels), test_dataset=(test_images, test_labels),
                                               layers=["code"], per_class=(3, 10), classifiers="svm",
                                               class_names=["a", "b", "c"])
    assert result.test_sizes == [12] and result.test_index == [None]
    assert torch.equal(result.accuracy, torch.ones(1, 1, 2)) and result.classes == ["a", "b", "c"]
    summary = result.to_dict()
    assert summary["best"]["accuracy"] == 1.0 and len(summary["accuracy"]) == 2


def test_bad_inputs_raise_one_line_errors():
    data = coded_data(k=3, per=4)
    model = Coded(3)
    cases = [
        (dict(layers=["nope"]), "unknown layer 'nope'"),
        (dict(layers=["code"], classifiers=["svn"]), "unknown classifier 'svn'"),
        (dict(layers=["code"], per_class=0), "per_class must be positive"),
        (dict(layers=["code"], per_class=4), "has 4 images, too few"),
        (dict(layers=["code"], repeats=0), "repeats must be a positive integer"),
    ]
    for kwargs, message in cases:
        with pytest.raises(IntrospectError, match=message):
            introspect.feature_generalization(model, data, **kwargs)
    one_class = (data[0], torch.zeros(len(data[1]), dtype=torch.long))
    with pytest.raises(IntrospectError, match="1 class; a classifier needs at least 2"):
        introspect.feature_generalization(model, one_class, layers=["code"], per_class=1)
    with pytest.raises(IntrospectError, match="label.*that the training set lacks"):
        introspect.feature_generalization(model, data, test_dataset=(data[0], data[1] + 5), layers=["code"],
                                          per_class=1)
    assert class_index([3, 3, 7])[1].tolist() == [0, 0, 1]


class Named(torch.utils.data.Dataset):
    """``(image, label)`` pairs with class names, like ``ImageFolderDataset`` (``classes``, ``targets``)."""

    def __init__(self, images, targets, classes):
        self.images, self.targets, self.classes = images, list(targets), list(classes)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.targets[i]


def test_a_list_of_image_label_pairs_equals_the_tensor_pair():
    images, labels = coded_data(k=3, per=6)
    pairs = [(img, int(y)) for img, y in zip(images, labels)]
    kwargs = dict(layers=["code", "noise"], per_class=2, seed=4, max_iter=30)
    want = introspect.feature_generalization(Coded(3), (images, labels), **kwargs)
    got = introspect.feature_generalization(Coded(3), pairs, test_dataset=pairs[::2], **kwargs)
    assert got.test_sizes == [9]
    assert torch.equal(introspect.feature_generalization(Coded(3), pairs, **kwargs).accuracy, want.accuracy)
    assert torch.equal(got.accuracy[0], torch.ones(2, 1))


def test_test_classes_are_matched_to_training_classes_by_name():
    images, labels = coded_data(k=3, per=6)
    train = Named(images, labels.tolist(), ["a", "b", "c"])
    test_images, test_labels = coded_data(k=3, per=4, seed=2)
    keep = test_labels > 0  # the test set has only b and c, numbered 0 and 1 in its own list
    test = Named(test_images[keep], (test_labels[keep] - 1).tolist(), ["b", "c"])
    result = introspect.feature_generalization(Coded(3), train, test_dataset=test, layers=["code"], per_class=3,
                                               classifiers="softmax")
    assert result.classes == ["a", "b", "c"] and result.test_sizes == [8]
    assert float(result.accuracy) == 1.0  # the label-carrying layer is perfect once labels agree
    other = Named(test_images[:2], [0, 0], ["z"])
    with pytest.raises(IntrospectError, match="class\\(es\\) 'z' that the training set lacks"):
        introspect.feature_generalization(Coded(3), train, test_dataset=other, layers=["code"], per_class=3)
