"""Model files: introspect checkpoints, plain state dicts, safetensors, and (trusted) pickles.

An **introspect checkpoint** is a ``torch.save`` of a plain dict, so it loads with
``torch.load(weights_only=True)`` and can never run code::

    {"format": "introspect-checkpoint", "version": 1,
     "arch": "zfnet", "arch_kwargs": {"num_classes": 10, ...},
     "state_dict": {...}, "classes": [...], "input_size": [C, H, W],
     "mean": [...], "std": [...], "aliases": {...}, "resize": 232, "interpolation": "bilinear",
     "weights": "ResNet50_Weights.IMAGENET1K_V2", "extra": {...}}

A plain state dict (``.pt``/``.pth``) or a ``.safetensors`` file needs ``arch``. A pickled whole
module is loaded only with ``trust_pickle=True``: unpickling runs whatever code the file carries.
"""
from __future__ import annotations

import json
import os
import pickle
import struct
import tempfile
import zipfile
from pathlib import Path

import torch
from torch import nn

from introspect.errors import IntrospectError

FORMAT = "introspect-checkpoint"
VERSION = 1
_ALTERNATIVES = {"alexnet": ["alexnet_torchvision"]}
#: Top-level modules of auxiliary classifiers (torchvision's GoogLeNet and Inception v3), which only
#: run in training mode; a state dict holding them is built with ``aux_logits=True``.
_AUX_HEADS = {"aux1", "aux2", "AuxLogits"}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if isinstance(device, torch.device):
        device = str(device)
    device = (device or "auto").lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise IntrospectError(
                f"--device {device} was requested but no CUDA GPU is available; use --device cpu (or auto)"
            )
        index = torch.device(device).index or 0
        if index >= torch.cuda.device_count():
            raise IntrospectError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) here; choose cuda:0")
        return torch.device(device)
    if device == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise IntrospectError("--device mps was requested but this PyTorch build has no usable MPS (Apple GPU); "
                              "use --device cpu (or auto)")
    if device in ("cpu", "mps"):
        return torch.device(device)
    raise IntrospectError(f"unknown device {device!r}; use auto, cpu or cuda")


def bundled_checkpoint() -> Path:
    """Path of the trained checkpoint shipped in the package."""
    return Path(__file__).resolve().parent.parent / "data" / "zfnet_fashion_mnist.pt"


def load_model(
    path: str | os.PathLike | None = None,
    arch: str | None = None,
    *,
    device: str | torch.device = "cpu",
    trust_pickle: bool = False,
    arch_kwargs: dict | None = None,
    weights: str | None = None,
) -> nn.Module:
    """Load a model file (or build an architecture, random or pretrained) as an ``nn.Module`` in eval mode.

    Args:
        path (str | Path | None): an introspect checkpoint, a state dict (``.pt``/``.pth``), a
            ``.safetensors`` file, or a pickled module (with ``trust_pickle``). ``None`` with ``arch``
            builds the architecture with random weights; ``None`` without ``arch`` loads the bundled
            trained ZFNet.
        arch (str | None): registered architecture name (``introspect models``); required for state
            dicts and safetensors, optional for checkpoints (checked against the file's own).
        device (str | torch.device): ``"cpu"``, ``"cuda"``, ``"auto"``.
        trust_pickle (bool): allow unpickling a whole module; only for files you trust.
        arch_kwargs (dict | None): builder arguments when building from ``arch`` (also for state
            dicts, e.g. ``{"aux_logits": True}``).
        weights (str | None): pretrained weights of ``arch`` by name: ``"DEFAULT"``, a member name
            (``"IMAGENET1K_V2"``) or the full enum name (``"ResNet50_Weights.IMAGENET1K_V2"``); for
            ``timm/<model>`` architectures a timm pretrained tag. The weights' class names and
            preprocessing come with them. Read from torchvision's cache
            (``$TORCH_HOME/hub/checkpoints``), downloaded when absent. Conflicts with ``path``.

    Returns:
        nn.Module: in eval mode on ``device``, with ``model.introspect_meta`` (a :class:`ModelMeta`).

    Example:
        >>> model = load_model("zfnet.pt", device="cpu")
        >>> model.introspect_meta.classes[:3]
        ['T-shirt/top', 'Trouser', 'Pullover']
        >>> model = load_model(arch="resnet50", weights="IMAGENET1K_V2")
        >>> model.introspect_meta.classes[281]
        'tabby'
    """
    from introspect.models import ModelMeta, get_arch

    dev = resolve_device(device)
    if weights is not None:
        if path is not None:
            raise IntrospectError(f"--weights {weights} and the model file {path} conflict: --weights builds "
                                  "the architecture with its pretrained weights; give one or the other")
        if arch is None:
            raise IntrospectError(f"--weights {weights} needs --arch NAME (see `introspect models` for the weights "
                                  "of each architecture)")
        from introspect.manager import get_plugin_manager

        get_arch(arch)  # an unknown name: the closest names
        model, meta = get_plugin_manager().hook.load_pretrained(arch=arch, weights=str(weights),
                                                                arch_kwargs=dict(arch_kwargs or {}))
        model.eval()
        model.introspect_meta = meta
        return model.to(dev)
    if path is None and arch is None:
        path = bundled_checkpoint()
        if not path.exists():
            raise IntrospectError("no model given and no bundled model installed; pass a MODEL file or --arch NAME")
    if path is None:
        assert arch is not None  # the bundled model was taken above when both are None
        spec = get_arch(arch)
        model = spec.build(**(arch_kwargs or {}))
        meta = ModelMeta(arch=arch, arch_kwargs=dict(arch_kwargs or {}), input_size=spec.input_size,
                         mean=spec.mean, std=spec.std, source="random")
    else:
        path = Path(path)
        if not path.exists():
            raise IntrospectError(
                f"model file not found: {path}; check the path (or leave MODEL out to use the bundled model)"
            )
        if path.is_dir():
            raise IntrospectError(f"model path {path} is a folder; pass a model file")
        if path.stat().st_size == 0:
            raise IntrospectError(f"model file {path} is empty; re-save or re-download it")
        from introspect.manager import get_plugin_manager

        result = get_plugin_manager().hook.load_model_file(path=path, arch=arch, trust_pickle=trust_pickle,
                                                           arch_kwargs=dict(arch_kwargs or {}))
        if result is None:
            raise IntrospectError(f"no plugin can read model file {path}; check its format")
        model, meta = result if isinstance(result, tuple) else (result, None)
        meta = meta or ModelMeta(arch=arch, source=str(path))
        if meta.source is None:
            meta.source = str(path)
    model.eval()
    model.introspect_meta = meta
    return model.to(dev)


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------
def read_model_file(path: Path, *, arch: str | None, trust_pickle: bool, arch_kwargs: dict | None = None):
    """Read ``path`` in any built-in format; returns ``(model, ModelMeta)``. ``arch_kwargs`` are builder
    arguments for a plain state dict (auxiliary heads are detected without them)."""
    from introspect.models import ModelMeta, get_arch

    if path.suffix.lower() == ".safetensors":
        obj: object = read_safetensors(path)
    else:
        obj = _torch_load(path, trust_pickle)
    if isinstance(obj, nn.Module):
        return obj, ModelMeta(arch=None, source=str(path))
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return _from_checkpoint(path, obj, arch)
    state = _find_state_dict(obj)
    if state is None:
        raise IntrospectError(
            f"{path} holds a {type(obj).__name__}, not a model: "
            "expected an introspect checkpoint, a state dict or a module"
        )
    if arch is None:
        raise IntrospectError(
            f"{path} is a plain state dict without an architecture; pass --arch NAME (see `introspect models`)"
        )
    kwargs = dict(arch_kwargs or {})
    spec = get_arch(arch)
    model, used = _build_matching(arch, state, kwargs)
    spec = get_arch(used)
    return model, ModelMeta(arch=used, arch_kwargs=kwargs, input_size=spec.input_size, mean=spec.mean, std=spec.std,
                            source=str(path))


def _torch_load(path: Path, trust_pickle: bool):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not _is_pickle(path):
            raise IntrospectError(
                f"cannot read model file {path}: corrupt or not a PyTorch file ({_first_line(exc)}); check the file"
            ) from None
        if not trust_pickle:
            raise IntrospectError(
                f"{path} is a pickled Python object, and unpickling can run arbitrary code; "
                "re-run with --trust-pickle only if you trust its source, or save a state dict instead"
            ) from None
    except (
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        ValueError,
        OSError,
        struct.error,
        AttributeError,
        TypeError,
        KeyError,
        IndexError,
        RecursionError,
        OverflowError,
        MemoryError,
    ) as exc:
        raise IntrospectError(
            f"cannot read model file {path}: corrupt or not a PyTorch file ({_first_line(exc)}); check the file"
        ) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # the file's own code failed: report it, do not crash
        raise IntrospectError(
            f"cannot unpickle {path}: {_first_line(exc)}; check the file and its code's imports"
        ) from None
    if not isinstance(obj, nn.Module) and _find_state_dict(obj) is None:
        raise IntrospectError(f"{path} unpickled to a {type(obj).__name__}, not a model; pass a module or a state dict")
    return obj


def _is_pickle(path: Path) -> bool:
    """Whether ``path`` holds a well-formed pickle (inside a torch zip or bare), checked by reading its
    opcodes without executing any of them."""
    import io
    import pickletools

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n.endswith("data.pkl")]
                if not names:
                    return False
                data = zf.read(names[0])
        else:
            data = path.read_bytes()
        for _ in pickletools.genops(io.BytesIO(data)):
            pass
        return True
    except Exception:
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _find_state_dict(obj) -> dict | None:
    if isinstance(obj, dict):
        if obj and all(isinstance(k, str) for k in obj) and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {k.removeprefix("module."): v for k, v in obj.items()}
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj:
                found = _find_state_dict(obj[key])
                if found is not None:
                    return found
    return None


def _is_numbers(value, count: int | None = None, positive_int: bool = False) -> bool:
    if not isinstance(value, (list, tuple)) or (count is not None and len(value) != count):
        return False
    if positive_int:
        return all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)


#: checkpoint key -> (what it must be, test); a damaged or hand-made file fails here in one line
_CHECKPOINT_FIELDS = {
    "version": ("a whole number", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "state_dict": ("a dict of tensors", lambda v: _find_state_dict(v) is not None),
    "arch": ("a name", lambda v: v is None or isinstance(v, str)),
    "arch_kwargs": ("a dict of builder arguments", lambda v: v is None or (isinstance(v, dict)
                                                                           and all(isinstance(k, str) for k in v))),
    "classes": ("a list of names", lambda v: v is None or (isinstance(v, (list, tuple))
                                                            and all(isinstance(c, str) for c in v))),
    "input_size": ("3 positive whole numbers (C, H, W)", lambda v: v is None or _is_numbers(v, 3, True)),
    "mean": ("a list of numbers", lambda v: v is None or _is_numbers(v)),
    "std": ("a list of numbers", lambda v: v is None or _is_numbers(v)),
    "aliases": ("a dict of names", lambda v: v is None or (isinstance(v, dict) and all(
        isinstance(k, str) and isinstance(x, str) for k, x in v.items()))),
}


def _check_checkpoint(path: Path, ckpt: dict) -> None:
    """Raise one line for a checkpoint field of the wrong kind (a damaged or hand-made file)."""
    if "state_dict" not in ckpt:
        raise IntrospectError(f"{path} is an introspect checkpoint without weights (no 'state_dict'); "
                              "the file is damaged: re-save it")
    for key, (kind, ok) in _CHECKPOINT_FIELDS.items():
        if key in ckpt and not ok(ckpt[key]):
            raise IntrospectError(f"{path} is damaged: its {key!r} is not {kind} (got {type(ckpt[key]).__name__}); "
                                  "re-save the checkpoint")


def _from_checkpoint(path: Path, ckpt: dict, arch: str | None):
    from introspect.models import ModelMeta, get_arch

    _check_checkpoint(path, ckpt)
    if ckpt.get("version", 1) > VERSION:
        raise IntrospectError(
            f"{path} was written by a newer introspect (format {ckpt['version']}); upgrade introspect"
        )
    file_arch = ckpt.get("arch")
    if arch is not None and file_arch is not None and arch != file_arch:
        raise IntrospectError(
            f"{path} is a {file_arch!r} checkpoint but --arch {arch} was given; drop --arch or pass the right one"
        )
    name = file_arch or arch
    if name is None:
        raise IntrospectError(f"{path} does not name its architecture; pass --arch NAME")
    spec = get_arch(name)
    kwargs = dict(ckpt.get("arch_kwargs") or {})
    model, name = _build_matching(name, _find_state_dict(ckpt["state_dict"]) or {}, kwargs)
    meta = ModelMeta(
        arch=name,
        arch_kwargs=kwargs,
        classes=list(ckpt["classes"]) if ckpt.get("classes") else None,
        input_size=tuple(ckpt.get("input_size") or spec.input_size),
        mean=tuple(ckpt.get("mean") or spec.mean),
        std=tuple(ckpt.get("std") or spec.std),
        aliases=dict(ckpt.get("aliases") or {}),
        source=str(path),
        resize=ckpt.get("resize"),
        interpolation=ckpt.get("interpolation") or "bilinear",
        weights=ckpt.get("weights"),
    )
    return model, meta


def _mismatch(model: nn.Module, state: dict) -> str | None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    if shapes:
        k = shapes[0]
        parts.append(f"{k} has shape {tuple(state[k].shape)} in the file but {tuple(own[k].shape)} in the model"
                     + (f" (+{len(shapes) - 1} more)" if len(shapes) > 1 else ""))
    if missing:
        parts.append(f"missing keys {missing[:3]}" + (f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""))
    if unexpected:
        parts.append(
            f"unexpected keys {unexpected[:3]}" + (f" (+{len(unexpected) - 3} more)" if len(unexpected) > 3 else "")
        )
    return "; ".join(parts)


def _num_classes_of(model: nn.Module, state: dict) -> int | None:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not last:
        return None
    for name, module in model.named_modules():
        if module is last[-1] and f"{name}.weight" in state:
            return int(state[f"{name}.weight"].shape[0])
    return None


def _build_matching(arch: str, state: dict, kwargs: dict):
    """Build ``arch`` so that ``state`` fits it (trying the class count of the file and torchvision's
    AlexNet layout); returns ``(model, arch_name)`` or raises with the first mismatches."""
    from introspect.models import get_arch

    first_error = None
    if "aux_logits" not in kwargs and any(k.split(".")[0] in _AUX_HEADS for k in state):
        kwargs["aux_logits"] = True  # GoogLeNet / Inception v3 saved with their auxiliary classifiers
    for name in [arch] + _ALTERNATIVES.get(arch, []):
        spec = get_arch(name)
        try:
            model = spec.build(**kwargs)
        except IntrospectError:
            raise
        except (TypeError, ValueError, RuntimeError, OverflowError, MemoryError) as exc:
            raise IntrospectError(f"architecture {name!r} cannot be built with the file's arguments {kwargs} "
                                  f"({_first_line(exc)}); the file is damaged or from another version") from None
        problem = _mismatch(model, state)
        if problem and "num_classes" not in kwargs:
            n = _num_classes_of(model, state)
            if n is not None:
                try:
                    candidate = spec.build(**kwargs, num_classes=n)
                except IntrospectError:
                    candidate = None
                if candidate is not None and _mismatch(candidate, state) is None:
                    kwargs["num_classes"] = n
                    model, problem = candidate, None
        if problem is None:
            model.load_state_dict(state, strict=True)
            return model, name
        first_error = first_error or problem
    raise IntrospectError(
        f"the weights do not fit architecture {arch!r}: {first_error}; pass the --arch the file was saved from"
    )


_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file (the format is 8 bytes of header length, a JSON header, raw data)."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(f.read(n))
            data = f.read()
        if not isinstance(header, dict):
            raise ValueError(f"the header is a JSON {type(header).__name__}, not an object")
        out = {}
        for key, info in header.items():
            if key == "__metadata__":
                continue
            start, end = info["data_offsets"]
            dtype = _ST_DTYPES[info["dtype"]]
            raw = bytearray(data[start:end])
            tensor = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            out[key] = tensor.reshape(info["shape"]).clone()
        return out
    except (
        struct.error,
        ValueError,
        KeyError,
        TypeError,
        RuntimeError,
        AttributeError,
        RecursionError,
        OverflowError,
        IndexError,
        MemoryError,
    ) as exc:
        raise IntrospectError(
            f"cannot read {path}: corrupt safetensors file ({_first_line(exc)}); check the file"
        ) from None


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------
def checkpoint_dict(model: nn.Module, *, arch: str | None = None, arch_kwargs: dict | None = None, classes=None,
                    input_size=None, mean=None, std=None, aliases=None, extra: dict | None = None) -> dict:
    """The introspect checkpoint of ``model`` as a plain dict (see the module docstring). Values not
    given come from the model's :class:`ModelMeta` when it has one (a loaded or pretrained model)."""
    from introspect.models import ModelMeta

    meta = getattr(model, "introspect_meta", None)
    if isinstance(meta, ModelMeta):
        arch = arch or meta.arch
        arch_kwargs = meta.arch_kwargs if arch_kwargs is None else arch_kwargs
        classes = meta.classes if classes is None else classes
        input_size = meta.input_size if input_size is None else input_size
        mean = meta.mean if mean is None else mean
        std = meta.std if std is None else std
        aliases = meta.aliases if aliases is None else aliases
        own = {"resize": meta.resize, "interpolation": meta.interpolation, "weights": meta.weights}
    else:
        own = {"resize": None, "interpolation": "bilinear", "weights": None}
    if not arch:
        raise IntrospectError("save_checkpoint needs arch= (the registered architecture name) for a model "
                              "that was not loaded by introspect")
    return {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch,
        "arch_kwargs": dict(arch_kwargs or {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "classes": list(classes) if classes is not None else None,
        "input_size": list(input_size) if input_size is not None else None,
        "mean": list(mean) if mean is not None else None,
        "std": list(std) if std is not None else None,
        "aliases": dict(aliases or {}),
        **own,
        "extra": dict(extra or {}),
    }


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    arch: str | None = None,
    arch_kwargs: dict | None = None,
    classes=None,
    input_size=None,
    mean=None,
    std=None,
    aliases=None,
    extra: dict | None = None,
) -> Path:
    """Write an introspect checkpoint that loads with ``torch.load(weights_only=True)``.

    Args:
        path: where to write (atomically: a temporary file is renamed into place).
        model (nn.Module): the model whose ``state_dict()`` is saved.
        arch (str): its registered architecture name; ``arch_kwargs`` its builder's arguments. Both,
            and the class names, preprocessing and weights name, default to the model's own
            ``introspect_meta`` (a model from :func:`load_model`, pretrained ones included).
        classes (list[str]): class names; ``input_size`` ``(C, H, W)``; ``mean``/``std`` per channel.
        extra (dict): anything else made of tensors, numbers, strings, lists and dicts (optimizer
            state, epoch, metrics).

    Example:
        >>> save_checkpoint("zf.pt", model, arch="zfnet", arch_kwargs={"num_classes": 10},
        ...                 classes=names, input_size=(1, 64, 64), mean=(0.28,), std=(0.35,))
    """
    path = Path(path)
    ckpt = checkpoint_dict(model, arch=arch, arch_kwargs=arch_kwargs, classes=classes, input_size=input_size,
                           mean=mean, std=std, aliases=aliases, extra=extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


__all__ = [
    "FORMAT", "VERSION", "resolve_device", "bundled_checkpoint", "load_model", "read_model_file",
    "read_safetensors", "checkpoint_dict", "save_checkpoint"
]
