"""Where a model lives: the device and floating dtype of its parameters, and inputs moved there."""
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


__all__ = ["model_device", "model_dtype", "to_model"]
