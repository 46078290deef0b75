"""Where a model lives: the device and floating dtype of its parameters, and inputs moved there; and
whether its weights are numbers at all (:func:`refuse_diverged`)."""
from __future__ import annotations

import torch
from torch import nn


def model_device(model: nn.Module, default: torch.device | str = "cpu") -> torch.device:
    """The device of ``model``'s first parameter (``default`` for a model without parameters)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device(default)


def model_dtype(model: nn.Module, default: torch.dtype = torch.float32) -> torch.dtype:
    """The dtype of ``model``'s first parameter when it is floating point, else ``default``."""
    param = next(model.parameters(), None)
    return param.dtype if param is not None and param.is_floating_point() else default


def to_model(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """``x`` on ``model``'s device, in its floating dtype (``x`` keeps its device and dtype where the
    model has no parameters, and its dtype where they are not floating point)."""
    param = next(model.parameters(), None)
    if param is None:
        return x
    return x.to(param.device, param.dtype if param.is_floating_point() else x.dtype)


def refuse_diverged(model: nn.Module) -> None:
    """Raise :class:`IntrospectError` when a parameter or buffer of ``model`` holds NaN or infinity
    (a diverged training run): every result computed from it would be NaN.

    Example:
        >>> refuse_diverged(model)   # IntrospectError: layer 'features.0' has NaN or infinite weights ...
    """
    from introspect.errors import IntrospectError

    for name, module in model.named_modules():
        for tensor in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise IntrospectError(f"layer {name!r} has NaN or infinite weights (a diverged training run?); "
                                      "pass a checkpoint from before it diverged")


__all__ = ["model_device", "model_dtype", "to_model", "refuse_diverged"]
