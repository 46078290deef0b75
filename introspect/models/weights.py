"""Pretrained torchvision weights by name: ``--weights DEFAULT`` / ``IMAGENET1K_V2`` /
``ResNet50_Weights.IMAGENET1K_V2``.

Everything comes from torchvision's own API (``get_model_weights``, ``Weights.meta``,
``weights.transforms()``), so every weights enum torchvision has works. The file is the one
torchvision caches (``$TORCH_HOME/hub/checkpoints/<its file name>``): read from there first
(``torch.load(weights_only=True)``: a cached file can never run code), otherwise downloaded as
torchvision does it, with a progress bar and a short network timeout.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import socket
import struct
import threading
import zipfile
from pathlib import Path
from urllib.parse import urlparse

from introspect.errors import IntrospectError, closest

#: Seconds a download may wait on the network before it is reported as failed.
DOWNLOAD_TIMEOUT = float(os.environ.get("INTROSPECT_DOWNLOAD_TIMEOUT", "10"))

#: introspect architecture name -> torchvision's, where they differ.
TORCHVISION_NAMES = {"alexnet_torchvision": "alexnet"}
_NO_WEIGHTS = {"alexnet": "the paper's AlexNet (with LRN) has no pretrained weights; torchvision's AlexNet "
                          "weights load with --arch alexnet_torchvision"}
_LOCK = threading.Lock()


def torchvision_name(arch: str) -> str | None:
    """torchvision's name of introspect architecture ``arch``, or None when it has no torchvision weights."""
    import torchvision

    if arch in _NO_WEIGHTS:
        return None
    name = TORCHVISION_NAMES.get(arch, arch)
    return name if name in torchvision.models.list_models(module=torchvision.models) else None


def weights_enum(arch: str):
    """The torchvision weights enum class of ``arch`` (``ResNet50_Weights``), or None."""
    import torchvision

    name = torchvision_name(arch)
    return torchvision.models.get_model_weights(name) if name else None


def resolve_weights(arch: str, name: str):
    """The weights member of ``arch`` called ``name``: ``DEFAULT``, a member name (``IMAGENET1K_V2``) or
    the full enum name (``ResNet50_Weights.IMAGENET1K_V2``), case-insensitive.

    Raises:
        IntrospectError: ``arch`` has no pretrained weights, or ``name`` is not one of them (the line
            lists the architecture's weights).
    """
    enum = weights_enum(arch)
    if enum is None:
        raise IntrospectError(_NO_WEIGHTS.get(arch) or f"architecture {arch!r} has no torchvision weights; "
                              "--weights works with torchvision's classification models (see `introspect models`)")
    text = str(name).strip()
    prefix, dot, member = text.rpartition(".")
    if dot:
        if prefix.lower() != enum.__name__.lower():
            raise IntrospectError(f"weights {text!r} are not {arch}'s; use one of {_listing(enum)}")
        text = member
    if text.upper() == "DEFAULT":
        return enum.DEFAULT
    for w in enum:
        if w.name.lower() == text.lower():
            return w
    raise IntrospectError(f"unknown weights {name!r} for {arch}{closest(text.upper(), [w.name for w in enum])}; "
                          f"use one of {_listing(enum)}")


def _listing(enum) -> str:
    return "DEFAULT (= " + enum.DEFAULT.name + "), " + ", ".join(w.name for w in enum)


def weights_info(weights) -> dict:
    """Name, accuracy, size and file of one weights member, from torchvision's metadata."""
    meta = weights.meta
    metrics = {k: (None if v != v else v) for k, v in next(iter(meta.get("_metrics", {}).values()), {}).items()}
    return {
        "name": weights.name,
        "enum": f"{type(weights).__name__}.{weights.name}",
        "default": weights is type(weights).DEFAULT,
        "acc@1": metrics.get("acc@1"),
        "acc@5": metrics.get("acc@5"),
        "num_params": meta.get("num_params"),
        "categories": len(meta.get("categories") or []),
        "file": weights_file(weights).name,
        "url": weights.url,
    }


def list_weights(arch: str) -> list[dict]:
    """:func:`weights_info` of every weights member of ``arch`` (empty when it has none)."""
    enum = weights_enum(arch)
    return [weights_info(w) for w in enum] if enum is not None else []


def weights_file(weights) -> Path:
    """Where torchvision caches ``weights``: ``torch.hub.get_dir()/checkpoints/<file name of the URL>``."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def preprocessing(weights) -> dict:
    """``input_size``, ``resize``, ``interpolation``, ``mean``, ``std`` of ``weights.transforms()``."""
    t = weights.transforms()
    crop = list(t.crop_size)
    h, w = (crop[0], crop[0]) if len(crop) == 1 else crop[:2]
    return {
        "input_size": (3, int(h), int(w)),
        "resize": int(t.resize_size[0]),
        "interpolation": t.interpolation.value,
        "mean": tuple(float(v) for v in t.mean),
        "std": tuple(float(v) for v in t.std),
    }


# --------------------------------------------------------------------------------------------------
# the file
# --------------------------------------------------------------------------------------------------
def fetch(weights, *, progress: bool = True) -> Path:
    """The cached file of ``weights``, downloaded first when it is absent.

    Raises:
        IntrospectError: the download failed (no network, timeout): one line with the file name, the
            folder to place it in and the URL to fetch it from.
    """
    import torch.hub

    path = weights_file(weights)
    if path.is_file():
        return path
    url = _url(weights)
    match = torch.hub.HASH_REGEX.search(path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _socket_timeout(DOWNLOAD_TIMEOUT):
            torch.hub.download_url_to_file(url, str(path), match.group(1) if match else None, progress=progress)
    except (OSError, RuntimeError, ValueError) as exc:  # URLError, timeouts, hash mismatch
        with contextlib.suppress(OSError):
            if path.exists() and path.stat().st_size == 0:
                path.unlink()
        reason = str(getattr(exc, "reason", "") or exc).strip().splitlines()
        raise IntrospectError(
            f"weights file {path.name} is not in {path.parent} and could not be downloaded "
            f"({reason[0][:120] if reason else type(exc).__name__}); fetch {url} elsewhere and place it in that folder"
        ) from None
    return path


def _url(weights) -> str:
    return weights.url


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def read_state_dict(path: Path) -> dict:
    """Read a cached weights file safely (``weights_only=True``); a corrupt file is one line."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError,
            struct.error, AttributeError, KeyError) as exc:
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise IntrospectError(f"the cached weights file {path} is corrupt ({line}); delete it and run again "
                              "to download it afresh") from None
    if not isinstance(state, dict):
        raise IntrospectError(f"the cached weights file {path} holds a {type(state).__name__}, not a state dict; "
                              "delete it and run again to download it afresh")
    return state


@contextlib.contextmanager
def _serving(state: dict):
    """While active, torchvision's weights loader returns ``state`` instead of reading (and unpickling)
    the file itself; so torchvision's builders set up the model exactly as for its own weights."""
    import torchvision.models._api as api

    with _LOCK:
        original = api.load_state_dict_from_url
        api.load_state_dict_from_url = lambda *args, **kwargs: state
        try:
            yield
        finally:
            api.load_state_dict_from_url = original


def build_pretrained(arch: str, name: str, arch_kwargs: dict | None = None, *, progress: bool = True):
    """Build torchvision architecture ``arch`` with its pretrained weights ``name``.

    Returns:
        tuple: ``(model, ModelMeta)``; the meta carries the weights' full name, categories as class
        names and the preprocessing of ``weights.transforms()``.
    """
    import torchvision

    from introspect.models import ModelMeta

    weights = resolve_weights(arch, name)
    path = fetch(weights, progress=progress)
    state = read_state_dict(path)
    kwargs = dict(arch_kwargs or {})
    try:
        with _serving(state), _quiet_warnings():
            model = torchvision.models.get_model(torchvision_name(arch), weights=weights, **kwargs)
    except TypeError as exc:
        raise IntrospectError(f"cannot build {arch} with {kwargs}: {exc}; check the --arch-arg values") from None
    except (RuntimeError, KeyError, ValueError) as exc:
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise IntrospectError(f"the cached weights file {path} does not fit {arch} {weights.name} ({line}); "
                              "delete it and run again to download it afresh") from None
    pre = preprocessing(weights)
    meta = ModelMeta(arch=arch, arch_kwargs=kwargs, classes=list(weights.meta.get("categories") or []) or None,
                     input_size=pre["input_size"], mean=pre["mean"], std=pre["std"], resize=pre["resize"],
                     interpolation=pre["interpolation"], weights=f"{type(weights).__name__}.{weights.name}",
                     source=str(path))
    return model, meta


@contextlib.contextmanager
def _quiet_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*auxiliary heads.*")
        yield


__all__ = [
    "DOWNLOAD_TIMEOUT", "torchvision_name", "weights_enum", "resolve_weights", "weights_info", "list_weights",
    "weights_file", "preprocessing", "fetch", "read_state_dict", "build_pretrained",
]
