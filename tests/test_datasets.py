"""``dataset_batches``, ``dataset_size`` and ``dataset_image``: the one way methods stream a data set."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from introspect.errors import IntrospectError
from introspect.images import dataset_batches, dataset_image, dataset_size


class Pairs(Dataset):
    """``(image, label)`` pairs over a tensor (module level: worker processes pickle it)."""

    def __init__(self, images: torch.Tensor, broken: int | None = None, odd_size: int | None = None):
        self.images, self.broken, self.odd_size = images, broken, odd_size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        if i == self.broken:
            return "not an image", 0
        if i == self.odd_size:
            return torch.zeros(3, 5, 5), 0
        return self.images[i], i % 3


IMAGES = torch.arange(11 * 3 * 4 * 4, dtype=torch.float32).view(11, 3, 4, 4)


def test_a_tensor_is_sliced_in_order_with_limit_and_indices():
    batches = list(dataset_batches(IMAGES, 4))
    assert [len(b) for b in batches] == [4, 4, 3] and torch.equal(torch.cat(batches), IMAGES)
    assert torch.equal(torch.cat(list(dataset_batches(IMAGES, 4, limit=6))), IMAGES[:6])
    chosen = [9, 2, 5, 7, 0]
    batches = list(dataset_batches(IMAGES, 2, indices=chosen, limit=1))  # indices win over limit
    assert [len(b) for b in batches] == [2, 2, 1] and torch.equal(torch.cat(batches), IMAGES[chosen])


@pytest.mark.parametrize("workers", [0, 2])
def test_a_data_set_gives_the_same_batches_as_its_tensor(workers):
    data = Pairs(IMAGES)
    for options in (dict(), dict(limit=5), dict(indices=torch.tensor([3, 1, 10]))):
        got = list(dataset_batches(data, 3, workers=workers, **options))
        want = list(dataset_batches(IMAGES, 3, **options))
        assert len(got) == len(want) and all(torch.equal(g, w) for g, w in zip(got, want))


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_items_are_one_line(workers):
    with pytest.raises(IntrospectError, match=r"^the data set gives str items; it must give image tensors") as info:
        list(dataset_batches(Pairs(IMAGES, broken=4), 4, workers=workers))
    assert "\n" not in str(info.value)
    with pytest.raises(IntrospectError, match=r"images of different sizes, \(3, 4, 4\) and \(3, 5, 5\)") as info:
        list(dataset_batches(Pairs(IMAGES, odd_size=6), 4, workers=workers))
    assert "\n" not in str(info.value)


def test_size_and_one_image():
    assert dataset_size(IMAGES) == 11 and dataset_size(IMAGES, limit=3) == 3 and dataset_size(Pairs(IMAGES), 50) == 11
    assert torch.equal(dataset_image(Pairs(IMAGES), 7), IMAGES[7]) and torch.equal(dataset_image(IMAGES, 2), IMAGES[2])
    with pytest.raises(IntrospectError, match=r"N x C x H x W, got shape \(3, 4, 4\).*x\[None\]"):
        dataset_size(IMAGES[0])
    with pytest.raises(IntrospectError, match="has no length"):
        dataset_size(iter([IMAGES[0]]))
    with pytest.raises(IntrospectError, match="gives str items"):
        dataset_image(Pairs(IMAGES, broken=1), 1)
