"""Benchmark: deconvnet projections of the top-9 activations of all 256 conv5 maps of ZFNet.

Claim: the 2,304 projections (ZFNet of the paper's Fig. 3, 224x224 input) are computed at least 10x
faster than a loop of captum ``NeuronDeconvolution`` calls giving the same results.

What is timed, side by side in one run, on the same winners:

* **introspect (chain)** -- the projection phase of ``top_k`` without cutting the image patches: one
  forward pass of the winning images recording the max-pool switches, then the windowed deconvnet
  walk (each projection computed only over its receptive field), the 2,304 projections written into
  a (2304, 3, 139, 139) tensor;
* **introspect (autograd)** -- the generic path: the same forward under the ``deconvnet`` rule and
  batched backward passes (``is_grads_batched``), cropped to the receptive field
  (timed on the top-9 of ``--autograd-maps`` maps and scaled to 2,304: it is slow);
* **captum** -- ``NeuronDeconvolution(model, conv5).attribute(image, neuron_selector=(c, y, x))``,
  one call per projection. Its cost per call does not depend on the neuron, so by default a sample
  of 60 calls spread over the 2,304 is timed and the total is the mean per call times 2,304
  (``--captum all`` runs every call). Each sampled captum result is also compared with ours
  (cosine similarity).

The fast path and captum alternate in ``--rounds`` rounds (the fast path on all 2,304 projections,
then a third of the captum sample), so that both meet the same load on a shared machine; the medians
over the rounds are compared, and the ratio of each round is printed too.

ZFNet is built with ``lrn=False`` so that captum's plain gradient through the (missing) contrast
normalization gives the same numbers as the deconvnet's pass-through; the timing is the same with
LRN. Weights are random (seed 0), images are crops of scikit-image's sample photographs.

Run:  python benchmarks/bench_deconv.py [--images 48] [--captum 60|all] [--rounds 3]
      [--autograd-maps 16] [--device cpu|cuda] [--threads 2]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time
import warnings

import numpy as np
import torch


def photos(n: int, size: int = 224, seed: int = 0) -> torch.Tensor:
    """``n`` ImageNet-normalized ``3 x size x size`` crops of scikit-image's sample photographs."""
    import skimage.data as data
    from PIL import Image

    sources = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.hubble_deep_field(),
               np.stack([data.camera()] * 3, -1), data.immunohistochemistry(), data.retina()]
    rng = np.random.default_rng(seed)
    mean = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)
    out = []
    for i in range(n):
        src = sources[i % len(sources)]
        h, w = src.shape[:2]
        side = int(rng.integers(min(h, w) // 3, min(h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(np.ascontiguousarray(src[y:y + side, x:x + side, :3]))
        crop = crop.resize((size, size), Image.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        t = torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255.0).permute(2, 0, 1)
        out.append((t - mean) / std)
    return torch.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=48, help="images mined for the top-9 (default 48)")
    parser.add_argument("--captum", default="60", help="captum calls timed: a number (sampled) or 'all'")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds: the fast path on all projections, then a share of the captum calls")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16, help="winner images per forward pass")
    parser.add_argument("--autograd-maps", type=int, default=16,
                        help="maps whose top-9 the generic autograd path projects, for its cost per projection "
                             "(default 16; 256 for all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    from captum.attr import NeuronDeconvolution

    from introspect.core.deconvnet import Frame, shift_crop
    from introspect.models import zfnet
    from introspect_deconv.top import _project_winners, top_k

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = zfnet(lrn=False).eval().to(device)
    images = photos(args.images)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, threads {torch.get_num_threads()}, device {device}")
    if device.type == "cuda":
        print(f"gpu: {torch.cuda.get_device_name(device)}")
    ranking = top_k(model, images.to(device), layer="conv5", k=9, batch_size=args.batch_size, project=False)
    m, k = ranking.image_index.shape
    n_proj = m * k
    print(f"ZFNet conv5 at 224x224: {m} maps x top-{k} over {args.images} images = {n_proj} projections, "
          f"{len(set(ranking.image_index.view(-1).tolist()))} distinct winning images, "
          f"receptive field {ranking.field.size[0]}x{ranking.field.size[1]}")
    frame = Frame.of(ranking.field, ranking.image_hw, "max")
    shape = tuple(images.shape[1:])

    def ours(method: str, maps: int = m):
        part = dataclasses.replace(ranking, channels=ranking.channels[:maps], activation=ranking.activation[:maps],
                                   image_index=ranking.image_index[:maps], position=ranking.position[:maps],
                                   boxes=ranking.boxes[:maps], origins=ranking.origins[:maps])
        sync()
        start = time.perf_counter()
        _project_winners(model, images.to(device), part, frame, shape, args.batch_size, method, None, patches=False)
        sync()
        return time.perf_counter() - start, part.projections

    layer = model.features[12]
    captum = NeuronDeconvolution(model, layer)
    flat = [(j, r) for j in range(m) for r in range(k)]
    if args.captum == "all":
        sample = flat
    else:
        count = min(int(args.captum), n_proj)
        sample = [flat[int(i)] for i in np.linspace(0, n_proj - 1, count).round()]

    def captum_calls(part):
        """Time captum on ``part`` of the sample; returns per-call times and the results."""
        times, results = [], []
        for j, r in part:
            n, c = int(ranking.image_index[j, r]), int(ranking.channels[j])
            x = images[n][None].to(device)
            sync()
            start = time.perf_counter()
            attribution = captum.attribute(x, neuron_selector=(c, *ranking.position[j, r].tolist()))
            sync()
            times.append(time.perf_counter() - start)
            results.append(((j, r), attribution.detach().float().cpu()))
        return times, results

    # warm-up, then rounds that alternate: the fast path on all 2,304, then a share of the captum
    # sample, so that both meet the same conditions on a shared machine
    ours("chain", 8)
    captum_calls(sample[:2])
    rounds = max(1, args.rounds)
    t_chain_rounds, t_call_rounds, captum_results, chain_windows = [], [], [], None
    for i in range(rounds):
        t, chain_windows = ours("chain")
        t_chain_rounds.append(t)
        times, results = captum_calls(sample[i::rounds])
        t_call_rounds.append(float(np.mean(times)))
        captum_results += results
    maps_autograd = min(args.autograd_maps, m)
    t_part, autograd_windows = ours("autograd", maps_autograd)
    t_autograd = t_part * m / maps_autograd

    cosines = []
    for (j, r), attribution in captum_results:
        if float(ranking.activation[j, r]) > 0:  # a map whose strongest activation is <= 0 projects to 0
            ref = shift_crop(attribution, torch.zeros(1, 2, dtype=torch.int64), ranking.origins[j, r][None],
                             frame.size)[0]
            cosines.append(float(torch.nn.functional.cosine_similarity(
                ref.flatten(), chain_windows[j, r].flatten(), dim=0)))
    t_chain = float(np.median(t_chain_rounds))
    per_call = float(np.median(t_call_rounds))
    t_captum = per_call * n_proj
    agree = float((chain_windows[:maps_autograd] - autograd_windows).abs().max()
                  / chain_windows[:maps_autograd].abs().max())
    ratios = [c * n_proj / t for c, t in zip(t_call_rounds, t_chain_rounds)]
    print(f"introspect chain    : {t_chain:8.2f} s  ({1e3 * t_chain / n_proj:.2f} ms/projection; median of rounds "
          f"{[round(t, 2) for t in t_chain_rounds]})")
    print(f"introspect autograd : {t_autograd:8.2f} s  ({1e3 * t_autograd / n_proj:.2f} ms/projection; "
          f"{maps_autograd * k} projections timed, scaled to {n_proj}); max |chain - autograd| / max = {agree:.1e}")
    how = (
        "all calls" if len(sample) == n_proj else f"{len(sample)} sampled calls, median of the rounds' means x {n_proj}"
    )
    print(f"captum loop         : {t_captum:8.2f} s  ({1e3 * per_call:.1f} ms/call; {how}; rounds "
          f"{[round(1e3 * c, 1) for c in t_call_rounds]} ms/call)")
    print(f"cosine(ours, captum) over {len(cosines)} compared: min {min(cosines):.6f}")
    print(f"speed-up chain vs captum   : {t_captum / t_chain:6.1f}x  (target >= 10x); per round "
          f"{[round(x, 1) for x in ratios]}")
    print(f"speed-up autograd vs captum: {t_captum / t_autograd:6.1f}x")

if __name__ == "__main__":
    main()
