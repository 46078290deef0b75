"""Tests for introspect.images: reading every kind of image file, preprocessing, geometry, folders."""
from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
import skimage.data as skdata  # noqa: E402  (a dev dependency)
import torch
from PIL import Image
from torchvision import transforms

from introspect import images
from introspect.errors import IntrospectError
from introspect.images import (
    IMAGENET,
    ImageFolderDataset,
    Preprocess,
    find_images,
    load_images,
    preprocess_image,
    read_image,
)


def _one_line_error(excinfo, *words):
    message = str(excinfo.value)
    assert "\n" not in message
    assert ";" in message  # problem; fix
    for word in words:
        assert word in message, message
    return message


@pytest.fixture(scope="module")
def chelsea_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("chelsea") / "chelsea.png"
    Image.fromarray(skdata.chelsea()).save(path)
    return path


# --------------------------------------------------------------------------------------------------
# read_image: modes and formats
# --------------------------------------------------------------------------------------------------
def test_sixteen_bit_png_is_scaled_by_257(tmp_path):
    values = np.array([[0, 257, 1000], [32768, 65000, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")  # really stored as 16-bit
    rgb = np.asarray(read_image(path))
    expected = np.round(values / 257.0).astype(np.uint8)
    assert rgb.shape == (2, 3, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], expected)


def test_thirty_two_bit_and_float_tiffs(tmp_path):
    ints = np.array([[0, 65535], [257, 514]], dtype=np.int32)
    Image.fromarray(ints, "I").save(tmp_path / "i.tif")
    np.testing.assert_array_equal(np.asarray(read_image(tmp_path / "i.tif"))[:, :, 0], [[0, 255], [1, 2]])
    floats = np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32)
    Image.fromarray(floats, "F").save(tmp_path / "f.tif")
    got = np.asarray(read_image(tmp_path / "f.tif"))[:, :, 1]
    np.testing.assert_array_equal(got, np.round(floats * 255).astype(np.uint8))


def test_cmyk_jpeg_matches_cmyk_formula(tmp_path):
    cmyk = (50, 100, 150, 60)
    path = tmp_path / "print.jpg"
    Image.new("CMYK", (16, 16), cmyk).save(path, quality=100)
    rgb = np.asarray(read_image(path)).astype(int)
    k = cmyk[3]
    expected = [round((255 - v) * (255 - k) / 255) for v in cmyk[:3]]
    assert np.abs(rgb - np.array(expected)).max() <= 4
    np.testing.assert_array_equal(rgb, np.asarray(Image.open(path).convert("RGB")))


def test_rgba_is_composited_over_white(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = (200, 40, 10)
    rgba[..., 3] = [[0, 128, 255], [255, 64, 0]]
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    got = np.asarray(read_image(path)).astype(float)
    a = rgba[..., 3:4] / 255.0
    expected = a * rgba[..., :3] + (1 - a) * 255.0
    assert np.abs(got - expected).max() <= 1.0
    assert tuple(got[0, 0]) == (255, 255, 255)
    assert tuple(got[0, 2]) == (200, 40, 10)


def test_la_and_palette_with_transparency(tmp_path):
    la = Image.fromarray(np.array([[[10, 0], [10, 255]]], np.uint8), "LA")
    la.save(tmp_path / "la.png")
    np.testing.assert_array_equal(np.asarray(read_image(tmp_path / "la.png"))[0], [[255] * 3, [10] * 3])
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    pal.putpixel((0, 0), 1)
    pal.putpixel((1, 0), 2)
    pal.save(tmp_path / "pal.png", transparency=2)
    got = np.asarray(read_image(tmp_path / "pal.png"))
    np.testing.assert_array_equal(got[0], [[255, 0, 0], [255, 255, 255]])
    pal.save(tmp_path / "pal_opaque.png")
    np.testing.assert_array_equal(np.asarray(read_image(tmp_path / "pal_opaque.png"))[0, 1], [0, 0, 255])


def test_grayscale_and_one_bit_give_equal_channels(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    rgb = np.asarray(read_image(tmp_path / "g.png"))
    assert rgb.shape == (3, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], gray)
    Image.fromarray(gray > 100).convert("1").save(tmp_path / "b.png")
    bits = np.asarray(read_image(tmp_path / "b.png"))
    np.testing.assert_array_equal(bits[:, :, 0], np.where(gray > 100, 255, 0))


@pytest.mark.parametrize("suffix,options", [
    (".bmp", {}), (".tif", {}), (".tiff", {"compression": "tiff_lzw"}),
    (".webp", {"lossless": True}), (".PNG", {}),
])
def test_lossless_formats_round_trip(tmp_path, suffix, options):
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = tmp_path / f"x{suffix}"
    Image.fromarray(pixels).save(path, format=None if suffix != ".PNG" else "PNG", **options)
    img = read_image(path)
    assert img.mode == "RGB" and img.size == (7, 5)
    np.testing.assert_array_equal(np.asarray(img), pixels)


def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((16, 32, 3), np.uint8)
    stored[:8, :8] = (255, 0, 0)  # red block at the stored top-left
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif, quality=100, subsampling=0)
    upright = np.asarray(read_image(path)).astype(int)
    assert upright.shape == (32, 16, 3)
    red = (upright[..., 0] > 200) & (upright[..., 1] < 60)
    assert red[1:7, 9:15].all()  # the top-left block is now top-right
    assert not red[:, :7].any() and not red[9:].any()


# --------------------------------------------------------------------------------------------------
# read_image: errors
# --------------------------------------------------------------------------------------------------
def test_missing_folder_and_empty_files(tmp_path):
    with pytest.raises(IntrospectError) as excinfo:
        read_image(tmp_path / "nope.jpg")
    _one_line_error(excinfo, "not found", "nope.jpg", "check the path")
    with pytest.raises(IntrospectError) as excinfo:
        read_image(tmp_path)
    _one_line_error(excinfo, "folder")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(IntrospectError) as excinfo:
        read_image(tmp_path / "empty.png")
    _one_line_error(excinfo, "empty")


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("these are\nnot pixels\n")
    with pytest.raises(IntrospectError) as excinfo:
        read_image(path)
    _one_line_error(excinfo, "notes.png", "not an image")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file(tmp_path, fmt):
    pixels = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full = tmp_path / "full.img"
    Image.fromarray(pixels).save(full, format=fmt)
    cut = tmp_path / f"cut.{fmt.lower()}"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(IntrospectError) as excinfo:
        read_image(cut)
    _one_line_error(excinfo, str(cut), "corrupt or truncated")


def test_decompression_bomb_own_limit(tmp_path, monkeypatch):
    Image.new("RGB", (40, 30)).save(tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(IntrospectError) as excinfo:
        read_image(tmp_path / "big.png")
    _one_line_error(excinfo, "too large", "1200 pixels", "1000", "resize it first")


def test_decompression_bomb_pillow_warning_becomes_error(tmp_path, monkeypatch):
    Image.new("RGB", (40, 30)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1200 > 1000: Pillow only warns
    with pytest.raises(IntrospectError) as excinfo:
        read_image(tmp_path / "big.png")
    _one_line_error(excinfo, "too large", "1200 pixels")


# --------------------------------------------------------------------------------------------------
# preprocessing
# --------------------------------------------------------------------------------------------------
def _torchvision(resize, crop, mean, std):
    return transforms.Compose([
        transforms.Resize(resize), transforms.CenterCrop(crop),
        transforms.ToTensor(), transforms.Normalize(mean, std),
    ])


def test_preprocess_equals_torchvision(chelsea_png):
    img = Image.open(chelsea_png).convert("RGB")
    expected = _torchvision(224, 224, images.IMAGENET_MEAN, images.IMAGENET_STD)(img)
    got = IMAGENET(read_image(chelsea_png))
    assert got.shape == (3, 224, 224) and got.dtype == torch.float32
    assert torch.allclose(got, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("pre,resize,crop", [
    (Preprocess((3, 160, 224), resize=None), 224, (160, 224)),
    (Preprocess((3, 224, 224), resize=256), 256, 224),
    (Preprocess((3, 224, 200), resize=180), 180, (224, 200)),  # crop larger: zero padding
])
def test_preprocess_variants_equal_torchvision(chelsea_png, pre, resize, crop):
    img = Image.open(chelsea_png).convert("RGB")
    expected = _torchvision(resize, crop, pre.mean, pre.std)(img)
    assert torch.allclose(pre(read_image(chelsea_png)), expected, atol=1e-6, rtol=0)


def test_grayscale_model_input(chelsea_png):
    pre = Preprocess((1, 64, 64), (0.5,), (0.25,))
    assert pre.grayscale
    expected = _torchvision(64, 64, (0.5,), (0.25,))(Image.open(chelsea_png).convert("L"))
    got = pre(read_image(chelsea_png))
    assert got.shape == (1, 64, 64)
    assert torch.allclose(got, expected, atol=1e-6, rtol=0)


def test_denormalize_inverts_normalize(chelsea_png):
    x = IMAGENET(read_image(chelsea_png))
    img = Image.open(chelsea_png).convert("RGB")
    plain = transforms.Compose([transforms.Resize(224), transforms.CenterCrop(224), transforms.ToTensor()])(img)
    assert torch.allclose(IMAGENET.denormalize(x), plain, atol=1e-5)
    batch = IMAGENET.denormalize(torch.stack([x, x]))
    assert batch.shape == (2, 3, 224, 224) and batch.min() >= 0 and batch.max() <= 1
    with pytest.raises(IntrospectError):
        IMAGENET.denormalize(torch.zeros(1, 224, 224))


@pytest.mark.parametrize("size,square", [
    ((640, 480), (200, 300, 260, 360)),  # landscape: crop offset in x
    ((300, 500), (250, 40, 290, 80)),    # portrait: crop offset in y
])
def test_geometry_finds_a_white_square(size, square):
    width, height = size
    canvas = np.zeros((height, width, 3), np.uint8)
    y0, x0, y1, x1 = square
    canvas[y0:y1, x0:x1] = 255
    geo = IMAGENET.geometry(size)
    x = IMAGENET(Image.fromarray(canvas))
    bright = (IMAGENET.denormalize(x)[0] > 0.5).nonzero()
    found = (bright[:, 0].min().item(), bright[:, 1].min().item(),
             bright[:, 0].max().item() + 1, bright[:, 1].max().item() + 1)
    mapped = geo.to_input(square)
    assert np.abs(np.array(found) - np.array(mapped)).max() <= 1.0
    assert np.allclose(geo.to_image(mapped), square, atol=1e-9)
    outward = geo.to_input(square, outward=True)
    assert all(isinstance(v, int) for v in outward)
    assert outward[0] <= mapped[0] and outward[2] >= mapped[2]


def test_geometry_whole_input_and_clip():
    geo = IMAGENET.geometry((448, 448))
    assert geo.to_input((0, 0, 448, 448)) == (0.0, 0.0, 224.0, 224.0)
    assert geo.to_image((10, 20, 30, 40)) == (20.0, 40.0, 60.0, 80.0)
    wide = IMAGENET.geometry((640, 480))
    assert wide.offset == (0, 37) and wide.resized_size == (298, 224)
    back = wide.to_image((0, 0, 224, 224), outward=True, clip=True)
    assert back[0] == 0 and back[2] == 480 and 0 < back[1] < back[3] < 640
    assert wide.to_input((0, 0, 480, 640), clip=True) == (0.0, 0.0, 224.0, 224.0)


def test_from_meta_and_validation():
    assert Preprocess.from_meta(None) == IMAGENET
    assert Preprocess.from_meta(SimpleNamespace(input_size=None, mean=None, std=None)) == IMAGENET
    gray = Preprocess.from_meta({"input_size": (1, 28, 28)})
    assert gray.grayscale and gray.mean == images.GRAY_MEAN
    custom = Preprocess.from_meta(SimpleNamespace(input_size=[3, 32, 32], mean=[0.5] * 3, std=[0.2] * 3))
    assert custom.input_size == (3, 32, 32) and custom.std == (0.2, 0.2, 0.2)
    for bad in [dict(input_size=(2, 8, 8), mean=(0,) * 2, std=(1,) * 2),
                dict(input_size=(3, 8), mean=(0,) * 3, std=(1,) * 3),
                dict(input_size=(3, 8, 8), mean=(0,), std=(1,)),
                dict(input_size=(3, 8, 8), mean=(0,) * 3, std=(1, 0, 1)),
                dict(input_size=(3, 8, 8), mean=(0,) * 3, std=(1,) * 3, resize=0)]:
        with pytest.raises(IntrospectError) as excinfo:
            Preprocess(**bad)
        _one_line_error(excinfo)


def test_load_image_and_images(chelsea_png, tmp_path):
    one = preprocess_image(chelsea_png)
    assert one.shape == (1, 3, 224, 224)
    Image.new("L", (50, 80), 128).save(tmp_path / "gray.png")
    both = load_images([chelsea_png, tmp_path / "gray.png"], Preprocess((3, 32, 32)))
    assert both.shape == (2, 3, 32, 32)
    gray = Preprocess((3, 32, 32)).denormalize(both[1])
    assert torch.allclose(gray, torch.full((3, 32, 32), 128 / 255), atol=1e-6)
    with pytest.raises(IntrospectError):
        load_images([])


# --------------------------------------------------------------------------------------------------
# folders
# --------------------------------------------------------------------------------------------------
def _png(path, value=0, size=(8, 6)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path, format="PNG")


def test_flat_folder(tmp_path):
    _png(tmp_path / "b.png")
    _png(tmp_path / "A.JPG")
    _png(tmp_path / "sub" / "c.webp")
    _png(tmp_path / ".hidden.png")
    _png(tmp_path / ".cache" / "d.png")
    (tmp_path / "notes.txt").write_text("x")
    ds = ImageFolderDataset(tmp_path, Preprocess((3, 16, 16)))
    assert [p.relative_to(tmp_path).as_posix() for p in ds.paths] == ["A.JPG", "b.png", "sub/c.webp"]
    assert ds.classes == [] and ds.targets == [-1, -1, -1] and len(ds) == 3
    x, label = ds[0]
    assert x.shape == (3, 16, 16) and label == -1


def test_class_folder_layout(tmp_path):
    _png(tmp_path / "dog" / "1.png", 10)
    _png(tmp_path / "cat" / "2.png", 20)
    _png(tmp_path / "cat" / "deeper" / "1.png", 30)
    _png(tmp_path / ".git" / "x.png")
    ds = ImageFolderDataset(tmp_path, Preprocess((3, 8, 8), (0, 0, 0), (1, 1, 1)))
    assert ds.classes == ["cat", "dog"]
    assert [p.relative_to(tmp_path).as_posix() for p in ds.paths] == ["cat/2.png", "cat/deeper/1.png", "dog/1.png"]
    assert ds.targets == [0, 0, 1]
    x, label = ds[2]
    assert label == 1 and torch.allclose(x, torch.full((3, 8, 8), 10 / 255))
    assert find_images(tmp_path) == ds.paths


def test_bad_folders(tmp_path):
    for target, words in [(tmp_path / "missing", ["not found"]), (tmp_path, ["no images found"])]:
        with pytest.raises(IntrospectError) as excinfo:
            ImageFolderDataset(target)
        _one_line_error(excinfo, *words)
    _png(tmp_path / "a.png")
    with pytest.raises(IntrospectError) as excinfo:
        ImageFolderDataset(tmp_path / "a.png")
    _one_line_error(excinfo, "not a folder")


def test_corrupt_image_in_folder_names_the_file(tmp_path):
    _png(tmp_path / "good.png")
    (tmp_path / "zz_bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 garbage")
    ds = ImageFolderDataset(tmp_path)
    ds[0]
    with pytest.raises(IntrospectError) as excinfo:
        ds[1]
    _one_line_error(excinfo, "zz_bad.jpg")


def test_a_gif_is_an_image_for_folders_and_for_the_model_argument(tmp_path):
    """One set of image suffixes: a GIF in a folder is read (its first frame), and a GIF given as
    MODEL is recognized as an image."""
    from introspect.cli import open_model
    from introspect.errors import IntrospectError

    pixels = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    Image.fromarray(pixels).convert("P", palette=Image.ADAPTIVE).save(tmp_path / "a.gif")
    ds = ImageFolderDataset(tmp_path, Preprocess((3, 16, 16), (0.0,) * 3, (1.0,) * 3))
    assert [p.name for p in ds.paths] == ["a.gif"]
    expected = torch.from_numpy(np.asarray(Image.open(tmp_path / "a.gif").convert("RGB"))).permute(2, 0, 1) / 255
    torch.testing.assert_close(ds[0][0], expected.float(), rtol=0, atol=1e-6)
    with pytest.raises(IntrospectError, match="looks like an image"):
        open_model(tmp_path / "a.gif", None, "cpu", False)


def test_image_batch_makes_one_batch_or_says_what_to_pass():
    from introspect.images import image_batch

    x = torch.arange(12.0, requires_grad=True).reshape(3, 2, 2)
    batch = image_batch(x)
    assert batch.shape == (1, 3, 2, 2) and not batch.requires_grad and torch.equal(batch[0], x.detach())
    assert image_batch(torch.zeros(2, 3, 4, 4)).shape == (2, 3, 4, 4)
    for bad, words in ((np.zeros((1, 3, 4, 4)), "must be a tensor"), (torch.zeros(0, 3, 4, 4), "N >= 1"),
                       (torch.zeros(4, 4), "got shape (4, 4)")):
        with pytest.raises(IntrospectError, match=re.escape(words)):
            image_batch(bad)
