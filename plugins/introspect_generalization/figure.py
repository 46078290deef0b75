"""The table of the paper's Table 7 (text, Markdown, CSV, picture) and the accuracy-against-layer plot."""
from __future__ import annotations

import csv
import io

import numpy as np

from introspect.plugin import line_plot, table_image
from introspect_generalization.features import PAPER_LAYERS, PIXELS


def paper_number(alias: str | None) -> int | None:
    """The paper's layer number (1..7) of ``conv1``..``fc7``; ``None`` for other layers."""
    return PAPER_LAYERS.index(alias) + 1 if alias in PAPER_LAYERS else None


def _is_pixels(result, i: int) -> bool:
    return result.layers[i] == PIXELS and result.aliases[i] is None


def row_titles(result) -> list[str]:
    """``layer 1 (conv1)`` ... ``layer 7 (fc7)`` for the paper's layers, else the layer's name."""
    titles = []
    for i in range(len(result.layers)):
        number = None if _is_pixels(result, i) else paper_number(result.aliases[i])
        titles.append(f"layer {number} ({result.aliases[i]})" if number else result.layer_title(i))
    return titles


def column_titles(result) -> list[str]:
    """``softmax 5/class``, ... (classifier-major, as the paper groups SVM and softmax)."""
    return [f"{kind} {n}/class" for kind in result.classifiers for n in result.per_class]


def cells(result) -> list[list[str]]:
    """Accuracy in percent per row (layer) and column, ``mean ± std`` over several repeats."""
    rows = []
    for l in range(len(result.layers)):
        row = []
        for c in range(len(result.classifiers)):
            for p in range(len(result.per_class)):
                text = f"{100 * float(result.accuracy[l, c, p]):.1f}"
                if result.repeats > 1:
                    text += f" ± {100 * float(result.accuracy_std[l, c, p]):.1f}"
                row.append(text)
        rows.append(row)
    return rows


def caption(result) -> str:
    """One line: classes, test images, repeats, the chance level."""
    tests = sorted(set(result.test_sizes))
    test = str(tests[0]) if len(tests) == 1 else f"{tests[0]}-{tests[-1]}"
    return (f"Test accuracy (%) of linear classifiers on fixed features: {len(result.classes)} classes, "
            f"{test} test images, {result.repeats} repeat(s); chance {100 * result.chance:.1f}%")


def text_table(result) -> str:
    """The table as aligned plain text, for the terminal."""
    header = ["layer"] + column_titles(result)
    body = [[t] + r for t, r in zip(row_titles(result), cells(result))]
    widths = [max(len(r[j]) for r in [header] + body) for j in range(len(header))]
    lines = ["  ".join(h.ljust(w) if j == 0 else h.rjust(w) for j, (h, w) in enumerate(zip(r, widths)))
             for r in [header] + body]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join([caption(result)] + lines)


def markdown_table(result) -> str:
    """The table in Markdown (a caption line, then the table)."""
    header = ["layer"] + column_titles(result)
    lines = [caption(result), "", "| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join([t] + r) + " |" for t, r in zip(row_titles(result), cells(result))]
    return "\n".join(lines)


def csv_text(result) -> str:
    """One row per layer, classifier and setting: accuracy, its std, mean class accuracy, sizes."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["layer", "alias", "feature_dim", "classifier", "per_class", "train_images", "accuracy", "std",
                "class_accuracy", "repeats"])
    for l, name in enumerate(result.layers):
        for c, kind in enumerate(result.classifiers):
            for p, n in enumerate(result.per_class):
                w.writerow([name, result.aliases[l] or "", result.feature_dims[l], kind, n, result.train_sizes[p],
                            f"{float(result.accuracy[l, c, p]):.6f}", f"{float(result.accuracy_std[l, c, p]):.6f}",
                            f"{float(result.class_accuracy[l, c, p]):.6f}", result.repeats])
    return buf.getvalue()


def accuracy_plot(result) -> np.ndarray:
    """Accuracy against layer, one curve per classifier and setting, and the chance level."""
    pixels = bool(result.layers) and _is_pixels(result, 0)
    numbers = [paper_number(a) for a in result.aliases[1 if pixels else 0:]]
    if all(numbers) and numbers == sorted(set(numbers)):  # the paper's layer numbers
        x = np.array(([0] if pixels else []) + numbers)
    else:  # positions in the order given
        x = np.arange(len(result.layers)) + (0 if pixels else 1)
    series = {f"{kind} {n}/class": result.accuracy[:, c, p].numpy()
              for c, kind in enumerate(result.classifiers) for p, n in enumerate(result.per_class)}
    series["chance"] = np.full(len(x), result.chance)
    return line_plot(x, series, title="Linear classifiers on the fixed features of each layer",
                     xlabel="layer (0 = pixels)" if pixels else "layer", ylabel="test accuracy",
                     size=(720, 420), ylim=(0.0, 1.0), legend="right")


def table_picture(result) -> np.ndarray:
    """The table as a picture."""
    return table_image(["layer"] + column_titles(result),
                       [[t] + r for t, r in zip(row_titles(result), cells(result))], title=caption(result))


def figure(plot: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The plot above the table on white."""
    width = max(plot.shape[1], table.shape[1])

    def pad(img: np.ndarray) -> np.ndarray:
        out = np.full((img.shape[0], width, 3), 255, np.uint8)
        out[:, :img.shape[1]] = img
        return out

    return np.concatenate([pad(plot), np.full((8, width, 3), 255, np.uint8), pad(table)])


__all__ = [
    "paper_number",
    "row_titles",
    "column_titles",
    "cells",
    "caption",
    "text_table",
    "markdown_table",
    "csv_text",
    "accuracy_plot",
    "table_picture",
    "figure",
]
