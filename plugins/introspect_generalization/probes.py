"""The linear classifiers trained on fixed features: softmax and a one-vs-rest linear SVM.

Both are written in torch and trained full-batch with L-BFGS (strong Wolfe line search), in float64.
With ``C`` the inverse regularization strength (sklearn's convention; default 1.0), ``n`` training
examples ``x_i`` with classes ``y_i`` among ``K``, weights ``W`` (``D x K``) and biases ``b`` (not
penalized):

* ``softmax`` -- multinomial logistic regression, like sklearn's ``LogisticRegression(C=C)``:
  ``C * sum_i -log softmax(x_i W + b)[y_i] + ||W||^2 / 2``;
* ``svm`` -- one-vs-rest linear SVM with the squared hinge loss, like sklearn's
  ``LinearSVC(C=C)``: ``C * sum_i sum_k max(0, 1 - t_ik (x_i w_k + b_k))^2 + ||W||^2 / 2`` with
  ``t_ik = +1`` when ``y_i = k`` and ``-1`` otherwise; the predicted class has the largest score.

The objectives are divided by ``C * n`` before minimizing (the same minimizer, better scaled). When
the features have more dimensions than there are training examples (conv maps, few images per
class), the weights are found in the span of the training features (:func:`row_space`): the
minimizer lies there (representer theorem), and with an orthonormal basis of that span the problem
keeps its objective and conditioning but has at most ``n`` instead of ``D`` unknowns per class.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from introspect.plugin import IntrospectError, closest
from introspect_generalization.defaults import CLASSIFIERS  # noqa: E402  (the classifiers, by name)


@dataclass
class LinearProbe:
    """A trained linear classifier: ``scores = x @ weight + bias``; ``iterations`` of L-BFGS used."""

    kind: str
    weight: torch.Tensor
    bias: torch.Tensor
    iterations: int = 0

    def predict(self, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """Class indices (int64) of the rows of ``x`` (``N x D``)."""
        w, b = self.weight, self.bias
        return torch.cat([(x[a:a + batch_size].to(w) @ w + b).argmax(1) for a in range(0, len(x), batch_size)])


def check_classifiers(classifiers) -> list[str]:
    """``classifiers`` (a name or names) checked against :data:`CLASSIFIERS`, duplicates dropped."""
    names = [classifiers] if isinstance(classifiers, str) else list(classifiers or [])
    if not names:
        raise IntrospectError(f"no classifier given; choose from {', '.join(CLASSIFIERS)}")
    for n in names:
        if n not in CLASSIFIERS:
            raise IntrospectError(f"unknown classifier {n!r}{closest(str(n), CLASSIFIERS)}; "
                                  f"choose from {', '.join(CLASSIFIERS)}")
    return list(dict.fromkeys(names))


def _loss(kind: str, scores: torch.Tensor, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The summed loss of ``scores`` (``N x K``) and its gradient with respect to the scores."""
    if kind == "softmax":
        logp = torch.log_softmax(scores, 1)
        return -(logp * onehot).sum(), logp.exp() - onehot
    sign = 2 * onehot - 1
    margin = (1.0 - sign * scores).clamp(min=0)
    return margin.square().sum(), -2 * sign * margin


def row_space(x: torch.Tensor, rtol: float = 1e-10) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates of the rows of ``x`` (``N x D``) in an orthonormal basis of their span.

    Returns:
        tuple[Tensor, Tensor]: ``coords`` (``N x r``, float64) and ``basis`` (``D x r``, orthonormal
        columns) with ``coords @ basis.T == x`` (to rounding); directions with eigenvalue of
        ``x x^T`` under ``rtol`` times the largest are dropped.
    """
    x = x.to(torch.float64)
    values, vectors = torch.linalg.eigh(x @ x.T)
    keep = values > rtol * values.max().clamp(min=1e-300)
    sigma = values[keep].sqrt()
    coords = vectors[:, keep] * sigma
    return coords, (x.T @ vectors[:, keep]) / sigma


def fit(kind: str, x: torch.Tensor, y: torch.Tensor, num_classes: int, C: float = 1.0,
        max_iter: int = 500, span: tuple[torch.Tensor, torch.Tensor] | None = None) -> LinearProbe:
    """Train classifier ``kind`` (``softmax`` or ``svm``) on standardized features.

    Args:
        kind (str): ``"softmax"`` or ``"svm"`` (see the module docstring for the objectives).
        x (Tensor): ``N x D`` training features.
        y (Tensor): ``N`` int64 classes in ``0..num_classes-1``.
        num_classes (int): ``K``.
        C (float): inverse regularization strength (default 1.0, sklearn's default).
        max_iter (int): most L-BFGS iterations (default 500).
        span (tuple | None): :func:`row_space` of ``x`` when already computed. Default: computed
            when ``D > N`` (an exact reduction; see the module docstring).

    Returns:
        LinearProbe: weights ``D x K`` and biases ``K`` (float64, on ``x``'s device).

    Example:
        >>> probe = fit("svm", torch.randn(20, 3), torch.arange(20) % 2, 2)
        >>> probe.predict(torch.randn(5, 3)).shape
        torch.Size([5])
    """
    if kind not in CLASSIFIERS:
        check_classifiers([kind])
    if not (C > 0):
        raise IntrospectError(f"C must be positive, got {C!r}; e.g. C=1.0")
    if span is None and x.shape[1] > x.shape[0]:
        span = row_space(x)
    if span is not None:
        probe = fit(kind, span[0], y, num_classes, C, max_iter)
        return LinearProbe(kind, span[1] @ probe.weight, probe.bias, probe.iterations)
    x = x.to(torch.float64)
    y = y.to(x.device)
    onehot = F.one_hot(y, num_classes).to(x.dtype)
    w = torch.zeros(x.shape[1], num_classes, dtype=x.dtype, device=x.device)
    b = torch.zeros(num_classes, dtype=x.dtype, device=x.device)
    scale, n = 1.0 / (C * len(x)), len(x)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, history_size=10, tolerance_grad=1e-7,
                            tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure():  # the gradients in closed form: no autograd graph per evaluation
        loss, grad = _loss(kind, torch.addmm(b, x, w), onehot)
        w.grad = torch.addmm(w, x.T, grad, beta=scale, alpha=1.0 / n)
        b.grad = grad.sum(0) / n
        return loss / n + 0.5 * scale * w.square().sum()

    with torch.no_grad():
        opt.step(closure)
    iterations = opt.state[opt._params[0]].get("n_iter", 0)
    return LinearProbe(kind, w.detach(), b.detach(), int(iterations))


__all__ = ["CLASSIFIERS", "LinearProbe", "check_classifiers", "fit", "row_space"]
