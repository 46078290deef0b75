"""Incremental inference for occlusion sweeps: recompute only what an occluder can change.

The clean image is run once through the model's ``torch.fx`` graph and every node's output is kept
(the *cache*). For a batch of occluder positions each node then holds one of four states:

``const``  does not depend on the image (parameters, shapes of parameters): the cached value.
``clean``  depends on the image but no occluder in the sweep changes it: the cached value.
``win``    a batch of windows ``B x C x h x w``, one per position, at per-position offsets
           ``(oy, ox)`` of the node's map; outside its window a map equals the cache. Every position
           of a node has a window of the same size (windows are shifted inwards at the borders), so a
           batch is one tensor and one call of each operation.
``full``   whole batched values (``B x ...``), as an ordinary forward pass computes them.

How each operation moves a window (the region propagation, planned once for all positions):

* the input: the occluder box itself, holding the fill's pixels;
* convolution and pooling (``nn.Conv2d``, ``nn.MaxPool2d``, ``nn.AvgPool2d`` and their functional
  forms): the output units whose receptive field meets the window (its projective field, grown by the
  kernel and the stride); they are computed from an input patch read from the cache with the windows
  pasted in (zero padding for convolutions, ``-inf`` for max pooling, ceil mode included);
* spatially pointwise operations (ReLU and friends, BatchNorm in eval mode, local response
  normalization, which acts across channels only, dropout in eval mode): the same window;
* element-wise sums and products of several maps (residual connections) and channel concatenation:
  the union of the operands' windows;
* adaptive pooling to the map's own size: the same window;
* anything else -- adaptive pooling to another size, flattening, linear layers, or an operation this
  module does not know: the windows are pasted into whole maps and the operation runs on the batch
  (``full``), which is exact for every operation; everything downstream stays ``full``.

With ``tau`` (Krypton's projective-field thresholding, Nakandala et al., SIGMOD 2019) the window of
a convolution or pooling output is capped at ``ceil(tau * side)`` units per axis, centred on the exact
projective field; units outside are read from the cache, so the result is approximate.

Speed: an input patch is one ``index_select`` of pixel rows from a table of the cached map and the
batch's windows (indices planned for the whole sweep), in channels-last layout, where convolution
and pooling run fastest; local response normalization is a sum of shifted channel slices. The
*tail* of whole maps (flattening and the fully connected layers after the last window) can run once
over all batches (:meth:`IncrementalModel.run_batches`): one matrix product per layer, its weights
read once (ZFNet's first fully connected layer holds 150 MB). Memory:
the cache (one image's activations) plus, per position of a batch, the windows alive at once
(:meth:`IncrementalModel.bytes_per_position`).
"""
from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from introspect.core.ops import call_arg as _arg
from introspect.core.ops import conv_padding, pool_stride
from introspect.core.ops import pair as _pair

# --------------------------------------------------------------------------------------------------
# operation tables
# --------------------------------------------------------------------------------------------------
_POINTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Identity,
    nn.LocalResponseNorm, nn.Dropout, nn.Dropout2d, nn.AlphaDropout,
)
_POINTWISE_FUNCTIONS = {
    F.relu, torch.relu, F.relu_, torch.relu_, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu,
    F.silu, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh, F.softplus, F.prelu, torch.sigmoid,
    F.sigmoid, torch.tanh, F.tanh, torch.exp, torch.abs, torch.neg, operator.neg, torch.square,
    torch.sqrt, F.local_response_norm, torch.clamp, torch.clip, F.dropout, F.batch_norm,
}
_POINTWISE_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "clamp_min",
    "clamp_min_", "clamp_max", "abs", "neg", "exp", "square", "sqrt", "contiguous", "float", "clone",
    "detach",
}
_NARY_FUNCTIONS = {
    operator.add: operator.add, operator.iadd: operator.add, operator.sub: operator.sub,
    operator.isub: operator.sub, operator.mul: operator.mul, operator.imul: operator.mul,
    operator.truediv: operator.truediv, operator.itruediv: operator.truediv,
    torch.add: torch.add, torch.sub: torch.sub, torch.mul: torch.mul, torch.div: torch.div,
    torch.maximum: torch.maximum, torch.minimum: torch.minimum,
}
_NARY_METHODS = {"add": "add", "add_": "add", "sub": "sub", "sub_": "sub", "mul": "mul", "mul_": "mul",
                 "div": "div", "div_": "div"}
_INPLACE_FUNCTIONS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, F.relu_, torch.relu_}
#: functions with an ``inplace`` flag, and its position
_INPLACE_POSITION = {F.relu: 1, F.relu6: 1, F.selu: 1, F.hardswish: 1, F.hardsigmoid: 1, F.silu: 1,
                     F.mish: 1, F.leaky_relu: 2, F.elu: 2, F.celu: 2, F.hardtanh: 3, F.dropout: 3}
_SHAPE_METHODS = {"size", "dim", "ndimension"}


# --------------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------------
@dataclass
class Window:
    """Where a node's windows lie: one ``h x w`` window per position at offsets ``(oy, ox)``."""

    hw: tuple[int, int]
    oy: torch.Tensor  # (N,) long
    ox: torch.Tensor  # (N,) long
    map_hw: tuple[int, int]

    def slice(self, a: int, b: int) -> Window:
        return Window(self.hw, self.oy[a:b], self.ox[a:b], self.map_hw)

    @property
    def area(self) -> int:
        return self.hw[0] * self.hw[1]


@dataclass
class Slide:
    """A convolution or pooling: its window arithmetic and how to run it on an input patch."""

    kernel_span: tuple[int, int]  # (k - 1) * dilation + 1 per axis
    stride: tuple[int, int]
    padding: tuple[int, int]
    pad_value: float
    run: Callable[[torch.Tensor], torch.Tensor]  # on a patch, with padding already in it
    overflow_ok: bool = True  # windows may run past the padding (ceil mode): max pooling, not averaging


def _slide_axis(o, h, size, out_size, span, stride, pad, tau):
    """Along one axis: how many output units (``n``) a window ``[o, o + h)`` of the input changes, and
    the first of them per position (shifted inwards so that every position has ``n``); ``(0, None)``
    when nothing changes. With ``tau`` the count is capped at ``ceil(tau * out_size)``."""
    lo = torch.div(o + pad - span, stride, rounding_mode="floor") + 1
    hi = -torch.div(-(o + h + pad), stride, rounding_mode="floor") - 1
    lo, hi = lo.clamp(min=0), hi.clamp(max=out_size - 1)
    n = min(int((hi - lo + 1).clamp(min=0).max()), out_size) if o.numel() else 0
    if n == 0:
        return 0, None
    if tau is not None:
        cap = max(1, math.ceil(tau * out_size))
        if n > cap:
            lo = torch.div(lo + hi - (cap - 1), 2, rounding_mode="floor")
            n = cap
    return n, lo.clamp(0, out_size - n)


@dataclass
class Gather:
    """How a batch reads a region of one node's maps: rows ``ry + i``, columns ``rx + j`` (unpadded
    coordinates; inside ``pads`` they read ``pad_value``), of size ``hw``, with the source's windows
    (``window``; ``None`` when the source is clean) pasted over its cached map.

    ``index`` (when precomputed for a batch size) holds, for every position, the row of each patch
    pixel in the table ``[clean padded pixels; the batch's window pixels]``.
    """

    src: fx.Node
    ry: torch.Tensor  # (N,)
    rx: torch.Tensor  # (N,)
    hw: tuple[int, int]
    pads: tuple[int, int, int, int]
    pad_value: float
    window: Window | None
    index: torch.Tensor | None = None  # (N, h, w) int32/int64
    batch_size: int | None = None


@dataclass
class Step:
    """The plan of one graph node."""

    kind: str  # const | clean | win | full
    rule: str = ""  # input | slide | point | nary | cat | same (for kind == "win")
    window: Window | None = None
    slide: Slide | None = None
    fn: Callable | None = None  # point / nary: the out-of-place operation
    operand: fx.Node | None = None  # point: the windowed input
    dim: int = 1  # cat
    gathers: dict = field(default_factory=dict)  # slide / nary / cat: operand -> Gather (None: as is)
    patches: torch.Tensor | None = None  # input: the sweep's own window contents (``Sweep.patches``)


# --------------------------------------------------------------------------------------------------
# tracing
# --------------------------------------------------------------------------------------------------
class _Tracer(fx.Tracer):
    """The default tracer; ``leaves`` (qualified names) are kept as single opaque calls."""

    def __init__(self, leaves: Sequence[str] = ()):
        super().__init__()
        self.leaves = set(leaves)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname in self.leaves or super().is_leaf_module(m, qualname)


def trace(model: nn.Module, leaves: Sequence[str] = ()) -> fx.GraphModule:
    """``torch.fx`` graph of ``model`` (raises whatever fx raises for untraceable code).

    fx stores the tensor constants it meets (``_tensor_constant0``...) as attributes of the traced
    module itself; they are copied into the graph module and removed from ``model``, which is left
    exactly as it was (also when tracing fails).
    """
    stores = ("__dict__", "_parameters", "_buffers", "_modules")
    before = {store: set(getattr(model, store)) for store in stores}
    try:
        graph = _Tracer(leaves).trace(model)
        return fx.GraphModule(model, graph)
    finally:
        for store in stores:
            table = getattr(model, store)
            for key in set(table) - before[store]:
                del table[key]


def _is_inplace(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        return bool(getattr(gm.get_submodule(node.target), "inplace", False))
    if node.op == "call_function":
        at = _INPLACE_POSITION.get(node.target)
        positional = at is not None and len(node.args) > at and node.args[at] is True
        return node.target in _INPLACE_FUNCTIONS or bool(node.kwargs.get("inplace", False)) or positional
    if node.op == "call_method":
        return str(node.target).endswith("_") and not str(node.target).startswith("_")
    return False


def _call(gm: fx.GraphModule, node: fx.Node, args, kwargs):
    """Run one node on concrete values; an in-place operation works on a copy of its input."""
    if args and isinstance(args[0], torch.Tensor) and _is_inplace(gm, node):
        args = (args[0].clone(),) + tuple(args[1:])
    if node.op == "call_module":
        return gm.get_submodule(node.target)(*args, **kwargs)
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    if node.op == "call_method":
        return getattr(args[0], node.target)(*args[1:], **kwargs)
    raise RuntimeError(f"cannot call node {node.op}")  # pragma: no cover


# --------------------------------------------------------------------------------------------------
# the engine
# --------------------------------------------------------------------------------------------------
@dataclass
class Sweep:
    """Occluder boxes of one sweep: top-left corners ``(ys[i], xs[i])``, size ``box``.

    By default position ``i`` holds the fill's pixels inside its box. ``patches`` (``N x C x h x w``,
    ``(h, w) == box``), when given, is the content of each box instead: what the input holds there at
    position ``i`` (an occluder clipped at the border or covering some channels only is a box whose
    patch mixes the fill and the image).
    """

    ys: torch.Tensor  # (N,) long
    xs: torch.Tensor  # (N,) long
    box: tuple[int, int]
    patches: torch.Tensor | None = None

    def occluded(self, image: torch.Tensor, fill: torch.Tensor, a: int, b: int) -> torch.Tensor:
        """``(b - a) x C x H x W``: the occluded images of positions ``a:b`` (whole forward passes)."""
        h, w = self.box
        batch = image.expand(b - a, *image.shape[1:]).clone()
        for i in range(b - a):
            y0, x0 = int(self.ys[a + i]), int(self.xs[a + i])
            if self.patches is not None:
                batch[i, :, y0:y0 + h, x0:x0 + w] = self.patches[a + i]
            else:
                batch[i, :, y0:y0 + h, x0:x0 + w] = fill[0, :, y0:y0 + h, x0:x0 + w]
        return batch


class IncrementalModel:
    """A model prepared for incremental occlusion of one image: its ``torch.fx`` graph and the
    output of every node for the clean image (the cache, one image's activations).

    Args:
        model (nn.Module): an image classifier in eval mode whose batch elements are independent.
        image (Tensor): ``1 x C x H x W`` clean input, on the model's device.
        layers (sequence of str): canonical module names whose outputs are read out per position
            (:meth:`run` passes their states to ``readout``); a name with no node maps to ``None``.
        leaves (sequence of str): modules traced as single opaque calls (a requested layer whose
            output node cannot be told apart otherwise).

    Raises:
        Exception: whatever ``torch.fx`` raises when the model cannot be traced (data-dependent
            control flow); callers fall back to whole forward passes.

    Example:
        >>> engine = IncrementalModel(model, x, ["features.12"])
        >>> steps = engine.plan(Sweep(ys, xs, (50, 50)), batch_size=64)
        >>> logits = engine.run(steps, fill, 0, 64)          # positions 0..63, 64 x K
    """

    def __init__(self, model: nn.Module, image: torch.Tensor, layers: Sequence[str] = (),
                 leaves: Sequence[str] = ()):
        self.gm = trace(model, leaves)
        self.nodes = list(self.gm.graph.nodes)
        self.image = image
        self.cache: dict[fx.Node, Any] = {}
        self.depends: dict[fx.Node, bool] = {}
        self._tables: dict = {}
        with torch.no_grad():
            self._run_clean()
        self.layer_nodes = {name: self._find_layer(name) for name in layers}
        out_node = next(n for n in self.nodes if n.op == "output")
        self.output_node = out_node.args[0]
        if not isinstance(self.output_node, fx.Node):
            raise TypeError("the model returns a structure, not one tensor")
        self.logits = self.cache[self.output_node]
        # last use of every node, to free batch values early
        self.last_use: dict[fx.Node, int] = {}
        for i, n in enumerate(self.nodes):
            for a in n.all_input_nodes:
                self.last_use[a] = i

    # -- the clean pass -----------------------------------------------------------------------------
    def _run_clean(self) -> None:
        first = True
        for node in self.nodes:
            if node.op == "placeholder":
                if first:
                    value, dep = self.image, True
                    first = False
                elif node.args:
                    value, dep = node.args[0], False
                else:
                    raise TypeError(f"the model's forward needs argument {node.target!r} besides the image")
            elif node.op == "get_attr":
                value, dep = _fetch_attr(self.gm, node.target), False
            elif node.op == "output":
                continue
            else:
                args = fx.node.map_arg(node.args, lambda a: self.cache[a])
                kwargs = fx.node.map_arg(node.kwargs, lambda a: self.cache[a])
                value = _call(self.gm, node, args, kwargs)
                dep = any(self.depends[a] for a in node.all_input_nodes)
            self.cache[node] = value
            self.depends[node] = dep

    def _find_layer(self, name: str) -> fx.Node | None:
        """The node computing module ``name``'s output: its last call, or the last node traced
        inside it (checked against a hooked forward pass by :meth:`check_layers`)."""
        calls = [n for n in self.nodes if n.op == "call_module" and n.target == name]
        if calls:
            return calls[-1]
        inside = [n for n in self.nodes if n.op not in ("placeholder", "output", "get_attr")
                  and any(q == name for q, _ in (n.meta.get("nn_module_stack") or {}).values())]
        return inside[-1] if inside else None

    def check_layers(self, reference: dict[str, torch.Tensor]) -> list[str]:
        """Names whose located node does not reproduce the hooked module output ``reference``."""
        bad = []
        for name, node in self.layer_nodes.items():
            value = self.cache.get(node) if node is not None else None
            ref = reference.get(name)
            if not isinstance(value, torch.Tensor) or ref is None or value.shape != ref.shape \
                    or not torch.allclose(value, ref, rtol=1e-5, atol=1e-6):
                bad.append(name)
        return bad

    # -- planning -----------------------------------------------------------------------------------
    def plan(self, sweep: Sweep, tau: float | None = None, batch_size: int | None = None,
             index_budget: int = 1 << 24) -> dict[fx.Node, Step]:
        """Decide every node's state and window geometry for all positions of ``sweep``.

        Args:
            sweep (Sweep): the occluder positions.
            tau (float | None): projective-field threshold (approximate mode), or ``None``: exact.
            batch_size (int | None): the batches :meth:`run` will be called with (``a`` a multiple of
                it); then the gather indices of all positions are computed here at once, as long as
                they hold at most ``index_budget`` entries (16M: 64 MB), else batch by batch.

        Returns:
            dict[fx.Node, Step]: the plan of every node.
        """
        steps = self._plan(sweep, tau)
        if batch_size:
            self.precompute(steps, batch_size, index_budget)
        return steps

    def precompute(self, steps: dict[fx.Node, Step], batch_size: int, index_budget: int = 1 << 24) -> bool:
        """Compute the gather indices of all positions for batches of ``batch_size`` (see
        :meth:`plan`); returns whether they fit in ``index_budget`` entries (else nothing is done)."""
        gathers = [g for st in steps.values() for g in st.gathers.values() if g is not None]
        if not gathers or sum(len(g.ry) * g.hw[0] * g.hw[1] for g in gathers) > index_budget:
            return False
        local = torch.arange(len(gathers[0].ry), device=gathers[0].ry.device) % batch_size
        for g in gathers:
            g.index, g.batch_size = self._index(g, slice(None), local), batch_size
        return True

    def bytes_per_position(self, steps: dict[fx.Node, Step]) -> int:
        """The peak memory one position takes while a batch runs, from the plan: the windows and
        whole batched outputs alive at each node (values are freed after their last use), plus the
        patches and indices that node reads, doubled for the temporaries of the operations (measured
        on ZFNet at 224 x 224: 1.5 MB estimated, 0.95 MB of resident memory per position)."""
        def size(node, step) -> int:
            value = self.cache.get(node)
            if not isinstance(value, torch.Tensor) or step.kind not in ("win", "full"):
                return 0
            if step.kind == "full":
                return value[0].numel() * value.element_size()
            return value.shape[1] * step.window.area * value.element_size()

        live: dict[fx.Node, int] = {}
        peak = 0
        for i, node in enumerate(self.nodes):
            if node not in steps:
                continue
            step = steps[node]
            reading = sum((self.cache[g.src].shape[1] * self.cache[g.src].element_size() + 8) * g.hw[0] * g.hw[1]
                          for g in step.gathers.values() if g is not None)
            live[node] = size(node, step)
            peak = max(peak, sum(live.values()) + reading)
            for src in node.all_input_nodes:
                if self.last_use.get(src) == i:
                    live.pop(src, None)
        return max(2 * peak, 1)

    def _plan(self, sweep: Sweep, tau: float | None) -> dict[fx.Node, Step]:
        steps: dict[fx.Node, Step] = {}
        first = True
        for node in self.nodes:
            if node.op == "output":
                continue
            if node.op == "placeholder" and first:
                first = False
                steps[node] = Step("win", "input", Window(sweep.box, sweep.ys, sweep.xs,
                                                           tuple(self.image.shape[-2:])),
                                   patches=sweep.patches)
                continue
            if not self.depends[node]:
                steps[node] = Step("const")
                continue
            ins = [steps[a] for a in node.all_input_nodes if self.depends[a]]
            if any(s.kind == "full" for s in ins):
                steps[node] = Step("full")
            elif all(s.kind == "clean" for s in ins):
                steps[node] = Step("clean")
            else:
                steps[node] = self._plan_node(node, steps, tau) or Step("full")
        return steps

    def _map4(self, node) -> tuple[int, int] | None:
        value = self.cache.get(node) if isinstance(node, fx.Node) else None
        if isinstance(value, torch.Tensor) and value.dim() == 4 and value.shape[0] == 1:
            return tuple(value.shape[-2:])
        return None

    def _plan_node(self, node: fx.Node, steps, tau) -> Step | None:
        out = self._map4(node)
        if out is None or not node.args or not isinstance(node.args[0], (fx.Node, list, tuple)):
            return None
        if node.op == "call_module":
            module = self.gm.get_submodule(node.target)
            slide = _module_slide(module)
            if slide is not None:
                return self._plan_slide(node, node.args[0], slide, steps, tau)
            if _pointwise_module(module) and len(node.args) == 1 and not node.kwargs:
                return self._plan_point(node, node.args[0], steps, module)
            if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
                return self._plan_same(node, node.args[0], steps)
            return None
        if node.op == "call_function":
            target = node.target
            slide = _function_slide(target, node.args, node.kwargs, self.cache)
            if slide is not None:
                return self._plan_slide(node, node.args[0], slide, steps, tau)
            if target in _POINTWISE_FUNCTIONS and _pointwise_args_ok(target, node, self):
                return self._plan_point(node, node.args[0], steps, target)
            if target in _NARY_FUNCTIONS:
                return self._plan_nary(node, steps, _NARY_FUNCTIONS[target])
            if target is torch.cat:
                return self._plan_cat(node, steps)
            if target in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
                return self._plan_same(node, node.args[0], steps)
            return None
        if node.op == "call_method":
            name = str(node.target)
            if name in _POINTWISE_METHODS and _pointwise_args_ok(name, node, self):
                return self._plan_point(node, node.args[0], steps, name)
            if name in _NARY_METHODS:
                return self._plan_nary(node, steps, _NARY_METHODS[name])
        return None

    def _plan_slide(self, node, src, slide: Slide, steps, tau) -> Step | None:
        if not isinstance(src, fx.Node) or steps[src].kind != "win":
            return None
        win = steps[src].window
        size, out = win.map_hw, self._map4(node)
        if self._map4(src) != size:
            return None
        if not slide.overflow_ok and any((out[a] - 1) * slide.stride[a] + slide.kernel_span[a]
                                         > size[a] + 2 * slide.padding[a] for a in range(2)):
            return None
        ns, offs, starts, lengths = [], [], [], []
        for a, o in enumerate((win.oy, win.ox)):
            n, off = _slide_axis(o, win.hw[a], size[a], out[a], slide.kernel_span[a], slide.stride[a],
                                 slide.padding[a], tau)
            if n == 0:
                return Step("clean")
            ns.append(n)
            offs.append(off)
            starts.append(off * slide.stride[a] - slide.padding[a])
            lengths.append((n - 1) * slide.stride[a] + slide.kernel_span[a])
        pads = (max(0, -int(starts[0].min())), max(0, int((starts[0] + lengths[0]).max()) - size[0]),
                max(0, -int(starts[1].min())), max(0, int((starts[1] + lengths[1]).max()) - size[1]))
        gather = Gather(src, starts[0], starts[1], (lengths[0], lengths[1]), pads, slide.pad_value, win)
        return Step("win", "slide", Window(tuple(ns), offs[0], offs[1], out), slide=slide, gathers={src: gather})

    def _plan_point(self, node, src, steps, fn) -> Step | None:
        if not isinstance(src, fx.Node) or steps[src].kind != "win" or self._map4(src) != self._map4(node):
            return None
        if any(self.depends[a] for a in node.all_input_nodes if a is not src):
            return None
        return Step("win", "point", steps[src].window, fn=fn, operand=src)

    def _plan_same(self, node, src, steps) -> Step | None:
        if isinstance(src, fx.Node) and steps[src].kind == "win" and self._map4(src) == self._map4(node):
            return Step("win", "same", steps[src].window, operand=src)
        return None

    def _plan_union(self, operands: list, steps, out_hw) -> Window | None:
        wins = []
        for a in operands:
            if isinstance(a, fx.Node) and self.depends[a]:
                if steps[a].kind == "win":
                    if self._map4(a) != out_hw:
                        return None
                    wins.append(steps[a].window)
                elif self._map4(a) != out_hw:  # a clean map must be cut to the windows too
                    return None
            elif not _broadcast_ok(self.cache[a] if isinstance(a, fx.Node) else a, out_hw):
                return None
        if not wins:
            return None
        hw, offs = [], []
        for axis in range(2):
            o = [(w.oy if axis == 0 else w.ox) for w in wins]
            lo = torch.stack(o).min(0).values
            hi = torch.stack([oi + w.hw[axis] for oi, w in zip(o, wins)]).max(0).values
            n = min(int((hi - lo).max()), out_hw[axis])
            hw.append(n)
            offs.append(lo.clamp(0, out_hw[axis] - n))
        return Window(tuple(hw), offs[0], offs[1], out_hw)

    def _union_gathers(self, operands, steps, window: Window) -> dict:
        """Operand -> how to read it over ``window`` (``None``: use it as it is)."""
        gathers = {}
        for a in operands:
            if not isinstance(a, fx.Node) or not self.depends[a]:
                continue
            src = steps[a]
            if src.kind == "win" and src.window.hw == window.hw and torch.equal(src.window.oy, window.oy) \
                    and torch.equal(src.window.ox, window.ox):
                gathers[a] = None
            else:
                gathers[a] = Gather(a, window.oy, window.ox, window.hw, (0, 0, 0, 0), 0.0,
                                    src.window if src.kind == "win" else None)
        return gathers

    def _plan_nary(self, node, steps, fn) -> Step | None:
        out = self._map4(node)
        operands = list(node.args) + list(node.kwargs.values())
        window = self._plan_union(operands, steps, out)
        if window is None:
            return None
        return Step("win", "nary", window, fn=fn, gathers=self._union_gathers(operands, steps, window))

    def _plan_cat(self, node, steps) -> Step | None:
        tensors = node.args[0]
        dim = _arg(node.args, node.kwargs, 1, "dim", 0)
        if not isinstance(tensors, (list, tuple)) or dim not in (1, -3):
            return None
        out = self._map4(node)
        for t in tensors:
            if not (isinstance(t, fx.Node) and self._map4(t) == out):
                return None
        window = self._plan_union(list(tensors), steps, out)
        if window is None:
            return None
        return Step("win", "cat", window, dim=1, gathers=self._union_gathers(list(tensors), steps, window))

    # -- running a batch ----------------------------------------------------------------------------
    @torch.no_grad()
    def run(self, steps: dict[fx.Node, Step], fill: torch.Tensor, a: int, b: int,
            readout: Callable[[str, State, int], None] | None = None) -> torch.Tensor:
        """Outputs (``(b - a) x ...``) for positions ``a:b`` of the planned sweep.

        ``readout(layer_name, state, batch)`` is called with the :class:`State` of each layer node.
        """
        batch = b - a
        values: dict[fx.Node, State] = {}
        layer_of = {node: name for name, node in self.layer_nodes.items() if node is not None}
        for i, node in enumerate(self.nodes):
            if node.op == "output":
                break
            step = steps[node]
            values[node] = self._run_node(node, step, values, fill, a, b, batch)
            if readout is not None and node in layer_of:
                readout(layer_of[node], values[node], batch)
            for src in node.all_input_nodes:
                if self.last_use.get(src) == i and src is not self.output_node:
                    values.pop(src, None)
        return values[self.output_node].full(batch)

    def tail(self, steps: dict[fx.Node, Step]) -> int | None:
        """Index of the first node of the sweep's *tail*: from the first ``full`` node on, where every
        node is ``full``, ``const`` or ``clean`` (flattening, the fully connected layers), or ``None``.
        The tail reads no window, so :meth:`run_batches` runs it once over all positions."""
        kinds = [steps[n].kind for n in self.nodes if n.op != "output"]
        if "full" not in kinds:
            return None
        first = kinds.index("full")
        return first if all(k in ("full", "const", "clean") for k in kinds[first:]) else None

    def tail_bytes_per_position(self, steps: dict[fx.Node, Step], first: int) -> int:
        """Bytes per position of what the head hands to the tail (the maps the tail reads)."""
        tail = set(self.nodes[first:])
        live = {src for node in tail for src in node.all_input_nodes
                if src not in tail and steps[src].kind in ("win", "full")}
        return sum(self.cache[n][0].numel() * self.cache[n].element_size() for n in live
                   if isinstance(self.cache[n], torch.Tensor))

    @torch.no_grad()
    def run_batches(self, steps: dict[fx.Node, Step], fill: torch.Tensor, bounds: Sequence[tuple[int, int]],
                    first: int, progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """Outputs of the positions ``bounds[0][0]:bounds[-1][1]``: the head (nodes before ``first``,
        see :meth:`tail`) batch by batch as :meth:`run` does, the tail once over all of them (one
        matrix product per fully connected layer instead of one per batch: its weights are read once).
        Same numbers as :meth:`run` batch by batch."""
        tail = set(self.nodes[first:])
        live = [src for src in dict.fromkeys(s for n in self.nodes[first:] for s in n.all_input_nodes)
                if src not in tail]
        handed: dict[fx.Node, list] = {n: [] for n in live if steps[n].kind in ("win", "full")}
        for a, b in bounds:
            values: dict[fx.Node, State] = {}
            for i, node in enumerate(self.nodes[:first]):
                values[node] = self._run_node(node, steps[node], values, fill, a, b, b - a)
                for src in node.all_input_nodes:
                    if self.last_use.get(src) == i and src not in handed:
                        values.pop(src, None)
            for node, parts in handed.items():
                parts.append(values[node].full(b - a))
            if progress is not None:
                progress(b - a)
        a0, b0 = bounds[0][0], bounds[-1][1]
        values = {n: State("full", torch.cat(handed.pop(n)), self.cache[n]) if n in handed
                  else State(steps[n].kind, self.cache[n], self.cache[n]) for n in live}
        for i, node in enumerate(self.nodes[first:], first):
            if node.op == "output":
                break
            values[node] = self._run_node(node, steps[node], values, fill, a0, b0, b0 - a0)
            for src in node.all_input_nodes:
                if self.last_use.get(src) == i and src is not self.output_node:
                    values.pop(src, None)
        return values[self.output_node].full(b0 - a0)

    def _run_node(self, node, step: Step, values, fill, a, b, batch) -> State:
        clean = self.cache[node]
        if step.kind in ("const", "clean"):
            return State(step.kind, clean, clean)
        if step.kind == "full":
            return State("full", self._run_full(node, values, batch), clean)
        win = step.window.slice(a, b)
        if step.rule == "input":
            if step.patches is not None:
                return State("win", step.patches[a:b], clean, win)
            return State("win", _gather(fill, win.oy, win.ox, win.hw), clean, win)
        if step.rule == "slide":
            patch = self._read(step.gathers[node.args[0]], values, a, b)
            return State("win", step.slide.run(patch), clean, win)
        if step.rule == "same":
            return State("win", values[step.operand].value, clean, win)
        if step.rule == "point":
            src = values[step.operand]
            if isinstance(step.fn, nn.ReLU):
                return State("win", torch.relu(src.value), clean, win)
            if isinstance(step.fn, nn.LocalResponseNorm):
                m = step.fn
                return State("win", local_response_norm(src.value, m.size, m.alpha, m.beta, m.k), clean, win)
            if isinstance(step.fn, nn.Module):
                x = src.value.clone() if getattr(step.fn, "inplace", False) else src.value
                return State("win", step.fn(x), clean, win)
            args = fx.node.map_arg(node.args, lambda n: src.value if n is step.operand else self.cache[n])
            kwargs = fx.node.map_arg(node.kwargs, lambda n: self.cache[n])
            if isinstance(step.fn, str):
                name = step.fn[:-1] if step.fn.endswith("_") else step.fn
                return State("win", getattr(args[0], name)(*args[1:], **kwargs), clean, win)
            if _is_inplace(self.gm, node):
                args = (args[0].clone(),) + tuple(args[1:])
            return State("win", step.fn(*args, **kwargs), clean, win)
        cut = lambda n: self._cut(n, step, values, win, a, b)  # noqa: E731
        if step.rule == "cat":
            return State("win", torch.cat([cut(t) for t in node.args[0]], dim=1), clean, win)
        # nary
        args = fx.node.map_arg(node.args, cut)
        kwargs = fx.node.map_arg(node.kwargs, cut)
        if isinstance(step.fn, str):
            out = getattr(args[0], step.fn)(*args[1:], **kwargs)
        else:
            out = step.fn(*args, **kwargs)
        return State("win", out, clean, win)

    def _cut(self, node, step: Step, values, win: Window, a: int, b: int):
        """Operand ``node`` over ``win`` (a window tensor), or as it is when it broadcasts."""
        if not self.depends[node]:
            value = self.cache[node]
            if isinstance(value, torch.Tensor) and value.dim() == 4 and tuple(value.shape[-2:]) == win.map_hw \
                    and win.map_hw != (1, 1):
                return _gather(value, win.oy, win.ox, win.hw)
            return value
        gather = step.gathers[node]
        return values[node].value if gather is None else self._read(gather, values, a, b)

    def _table(self, node, pads, pad_value) -> tuple[torch.Tensor, int, int]:
        """The clean map of ``node``, padded, as a ``(Hp * Wp) x C`` table of pixels (cached)."""
        key = (node, pads, pad_value)
        if key not in self._tables:
            value = self.cache[node]
            if any(pads):
                value = F.pad(value, (pads[2], pads[3], pads[0], pads[1]), value=pad_value)
            hp, wp = value.shape[-2:]
            self._tables[key] = (value[0].permute(1, 2, 0).reshape(hp * wp, -1).contiguous(), hp, wp)
        return self._tables[key]

    def _index(self, g: Gather, sl: slice, local: torch.Tensor) -> torch.Tensor:
        """Rows of the table ``[clean pixels; window pixels]`` for the patches of positions ``sl``;
        ``local`` is each position's place in its batch."""
        _, hp, wp = self._table(g.src, g.pads, g.pad_value)
        ry, rx = g.ry[sl], g.rx[sl]
        dev = ry.device
        rows = ry[:, None] + (torch.arange(g.hw[0], device=dev) + g.pads[0])
        cols = rx[:, None] + (torch.arange(g.hw[1], device=dev) + g.pads[2])
        index = rows[:, :, None] * wp + cols[:, None, :]
        if g.window is not None:
            h, w = g.window.hw
            wy = rows - (g.window.oy[sl][:, None] + g.pads[0])
            wx = cols - (g.window.ox[sl][:, None] + g.pads[2])
            inside = ((wy >= 0) & (wy < h))[:, :, None] & ((wx >= 0) & (wx < w))[:, None, :]
            from_win = hp * wp + (local[:, None, None] * h + wy.clamp(0, h - 1)[:, :, None]) * w \
                + wx.clamp(0, w - 1)[:, None, :]
            index = torch.where(inside, from_win, index)
        limit = hp * wp + (int(local.max()) + 1) * (g.window.area if g.window is not None else 0)
        return index.to(torch.int32) if limit < 2 ** 31 else index

    def _read(self, g: Gather, values, a: int, b: int) -> torch.Tensor:
        """``B x C x h x w``: the region ``g`` of the current maps of ``g.src`` for positions ``a:b``.

        One ``index_select`` of pixel rows from the clean table and the batch's windows; the result
        has the channels-last memory layout that convolutions and pooling run fastest on.
        """
        table, _, _ = self._table(g.src, g.pads, g.pad_value)
        if g.index is not None and a % g.batch_size == 0 and b - a <= g.batch_size:
            index = g.index[a:b]
        else:
            index = self._index(g, slice(a, b), torch.arange(b - a, device=g.ry.device))
        if g.window is not None:
            pixels = values[g.src].value.permute(0, 2, 3, 1).reshape(-1, table.shape[1])
            table = torch.cat([table, pixels])
        out = table.index_select(0, index.reshape(-1))
        return out.view(*index.shape, table.shape[1]).permute(0, 3, 1, 2)

    def _materialize(self, node, values, batch: int):
        state = values.get(node)
        if state is None:
            return self.cache[node]
        if state.kind == "full":
            return state.value
        if state.kind == "const":
            return state.value
        return state.full(batch)

    def _run_full(self, node, values, batch):
        if (node.op == "call_method" and node.target in _SHAPE_METHODS) or (
                node.op == "call_function" and node.target is getattr):
            def meta(n):
                v = self.cache[n]
                if self.depends[n] and isinstance(v, torch.Tensor) and values[n].kind != "full":
                    return torch.empty((batch,) + tuple(v.shape[1:]), dtype=v.dtype, device="meta")
                return self._materialize(n, values, batch)
            args = fx.node.map_arg(node.args, meta)
            kwargs = fx.node.map_arg(node.kwargs, meta)
        else:
            args = fx.node.map_arg(node.args, lambda n: self._materialize(n, values, batch))
            kwargs = fx.node.map_arg(node.kwargs, lambda n: self._materialize(n, values, batch))
        return _call(self.gm, node, args, kwargs)


@dataclass
class State:
    """A node's value for one batch: ``kind`` const/clean/win/full, the tensor, the clean cache."""

    kind: str
    value: Any
    clean: Any
    window: Window | None = None

    def full(self, batch: int):
        """Whole batched maps (windows pasted into copies of the clean map)."""
        if self.kind == "full":
            return self.value
        if self.kind in ("const", "clean"):
            if isinstance(self.clean, torch.Tensor) and self.clean.dim() > 0 and self.clean.shape[0] == 1:
                return self.clean.expand(batch, *self.clean.shape[1:]).contiguous()
            return self.clean
        out = self.clean.expand(batch, *self.clean.shape[1:]).clone()
        h, w = self.window.hw
        dev = out.device
        rows = self.window.oy[:, None] + torch.arange(h, device=dev)
        cols = self.window.ox[:, None] + torch.arange(w, device=dev)
        b = torch.arange(batch, device=dev)[:, None, None]
        out.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]] = self.value.permute(0, 2, 3, 1)
        return out


def _fetch_attr(gm: nn.Module, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _gather(base: torch.Tensor, oy, ox, hw) -> torch.Tensor:
    """``B x C x h x w`` windows of ``base`` (``1 x C x H x W``) at offsets ``oy``, ``ox`` (channels last)."""
    rows = oy[:, None] + torch.arange(hw[0], device=oy.device)
    cols = ox[:, None] + torch.arange(hw[1], device=ox.device)
    out = base[0].permute(1, 2, 0)[rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)


def _broadcast_ok(value, out_hw) -> bool:
    """A non-windowed operand that broadcasts over a window unchanged (a scalar, a per-channel tensor)."""
    if not isinstance(value, torch.Tensor):
        return isinstance(value, (int, float, bool)) or value is None
    if value.dim() == 0:
        return True
    if value.dim() == 1:
        return value.shape[0] == 1
    return tuple(value.shape[-2:]) == (1, 1) or (value.dim() == 4 and tuple(value.shape[-2:]) == out_hw
                                                 and value.shape[0] == 1)


def _channels_last(weight: torch.Tensor) -> torch.Tensor:
    """A channels-last copy of a convolution's weights (the module's own tensor is never changed)."""
    return weight.detach().contiguous(memory_format=torch.channels_last)


def local_response_norm(x: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75,
                        k: float = 1.0) -> torch.Tensor:
    """``F.local_response_norm`` for ``N x C x H x W`` maps, as a sum of ``size`` shifted channel
    slices (several times faster on CPU than the average-pooling form; equal to float rounding)."""
    c = x.shape[1]
    sq = F.pad((x * x).permute(0, 2, 3, 1), (size // 2, (size - 1) // 2))
    total = sq[..., 0:c]
    for i in range(1, size):
        total = total + sq[..., i:i + c]
    return x / (total * (alpha / size) + k).pow(beta).permute(0, 3, 1, 2)


def _pointwise_module(module: nn.Module) -> bool:
    if isinstance(module, _POINTWISE_MODULES):
        return True
    if isinstance(module, nn.BatchNorm2d):
        return not module.training and module.running_mean is not None and module.running_var is not None
    return False


def _pointwise_args_ok(target, node: fx.Node, engine: IncrementalModel) -> bool:
    if target is F.dropout or target == "dropout":
        return _arg(node.args, node.kwargs, 2, "training", True) is False
    if target is F.batch_norm:
        rm = _arg(node.args, node.kwargs, 1, "running_mean", None)
        return rm is not None and _arg(node.args, node.kwargs, 5, "training", False) is False
    if target is F.prelu:
        return True
    for a in list(node.args[1:]) + list(node.kwargs.values()):
        value = engine.cache[a] if isinstance(a, fx.Node) else a
        if isinstance(value, torch.Tensor) and not _broadcast_ok(value, (-1, -1)):
            return False
    return True


def _module_slide(module: nn.Module) -> Slide | None:
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            return None
        k = _pair(module.kernel_size)
        d = _pair(module.dilation)
        padding = _conv_padding(module.padding, k, d)
        if padding is None:
            return None
        weight, bias, s, groups = _channels_last(module.weight), module.bias, _pair(module.stride), module.groups
        return Slide(tuple((k[a] - 1) * d[a] + 1 for a in range(2)), s, padding, 0.0,
                     lambda p: F.conv2d(p, weight, bias, s, 0, d, groups))
    if isinstance(module, nn.MaxPool2d):
        if module.return_indices:
            return None
        return _max_slide(module.kernel_size, module.stride, module.padding, module.dilation)
    if isinstance(module, nn.AvgPool2d):
        return _avg_slide(module.kernel_size, module.stride, module.padding, module.count_include_pad,
                          module.divisor_override)
    return None


def _function_slide(target, args, kwargs, cache) -> Slide | None:
    value = lambda v: cache[v] if isinstance(v, fx.Node) else v  # noqa: E731
    if target in (F.conv2d, torch.conv2d):
        weight = value(_arg(args, kwargs, 1, "weight", None))
        bias = value(_arg(args, kwargs, 2, "bias", None))
        if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
            return None
        k = tuple(weight.shape[-2:])
        weight = _channels_last(weight)
        s = _pair(value(_arg(args, kwargs, 3, "stride", 1)))
        d = _pair(value(_arg(args, kwargs, 5, "dilation", 1)))
        groups = int(value(_arg(args, kwargs, 6, "groups", 1)))
        padding = _conv_padding(value(_arg(args, kwargs, 4, "padding", 0)), k, d)
        if padding is None:
            return None
        return Slide(tuple((k[a] - 1) * d[a] + 1 for a in range(2)), s, padding, 0.0,
                     lambda p: F.conv2d(p, weight, bias, s, 0, d, groups))
    if target in (F.max_pool2d, torch.max_pool2d):
        if value(_arg(args, kwargs, 6, "return_indices", False)):
            return None
        k = value(_arg(args, kwargs, 1, "kernel_size", None))
        return _max_slide(k, value(_arg(args, kwargs, 2, "stride", None)), value(_arg(args, kwargs, 3, "padding", 0)),
                          value(_arg(args, kwargs, 4, "dilation", 1)))
    if target is F.avg_pool2d:
        get = lambda i, name, default: value(_arg(args, kwargs, i, name, default))  # noqa: E731
        return _avg_slide(get(1, "kernel_size", None), get(2, "stride", None), get(3, "padding", 0),
                          get(5, "count_include_pad", True), get(6, "divisor_override", None))
    return None


def _conv_padding(padding, k, d):
    before, after = conv_padding(padding, k, d)
    return before if before == after else None  # asymmetric "same" padding: let the full pass handle it


def _max_slide(kernel, stride, padding, dilation) -> Slide:
    k = _pair(kernel)
    s = pool_stride(stride, k)
    d = _pair(dilation)
    return Slide(tuple((k[a] - 1) * d[a] + 1 for a in range(2)), s, _pair(padding), -math.inf,
                 lambda p: F.max_pool2d(p, k, s, 0, d))


def _avg_slide(kernel, stride, padding, count_include_pad, divisor_override) -> Slide | None:
    k = _pair(kernel)
    s = pool_stride(stride, k)
    pad = _pair(padding)
    if any(pad) and not count_include_pad:
        return None
    # ceil-mode windows that run past the padding use a smaller divisor; _plan_slide refuses them
    return Slide(k, s, pad, 0.0, lambda p: F.avg_pool2d(p, k, s, 0, divisor_override=divisor_override),
                 overflow_ok=False)


__all__ = ["IncrementalModel", "Sweep", "Window", "Step", "State", "trace"]
