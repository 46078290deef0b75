"""Top-k mining on several processes: the merge against brute force, sharded mining against one
process, and real ``torchrun`` runs with two Gloo processes against the one-process command."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from introspect.cli import build_cli
from introspect.core.distributed import check_ranks, group_of
from introspect.errors import IntrospectError
from introspect.models import zfnet
from introspect_deconv.distributed import merge_top_k
from introspect_deconv.top import RunningTopK, mine, shard_indices, top_k

CHILD_TIMEOUT = 120  # seconds; a hang fails the test instead of blocking the suite


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------------
# the merge alone, against brute force
# --------------------------------------------------------------------------------------------------
def brute_force(act: torch.Tensor, k: int):
    """Per map: every image's strongest value and first position, sorted by (-value, image), cut
    to k and padded with empty entries (-inf, image -1, position (0, 0))."""
    n, c, h, w = act.shape
    rows = []
    for ch in range(c):
        entries = []
        for i in range(n):
            flat = act[i, ch].flatten().tolist()
            best = max(flat)
            pos = flat.index(best)
            entries.append((-best, i, [pos // w, pos % w]))
        entries.sort(key=lambda e: (e[0], e[1]))
        entries = entries[:k] + [(float("inf"), -1, [0, 0])] * max(0, k - n)
        rows.append(entries)
    values = torch.tensor([[-e[0] for e in r] for r in rows])
    images = torch.tensor([[e[1] for e in r] for r in rows])
    positions = torch.tensor([[e[2] for e in r] for r in rows])
    return values, images, positions


@pytest.mark.parametrize("n, k, world, batch", [(23, 4, 2, 3), (17, 5, 3, 2), (3, 5, 2, 1), (3, 4, 3, 2)])
def test_merge_of_ranks_equals_brute_force(n, k, world, batch):
    gen = torch.Generator().manual_seed(n * 100 + world)
    act = torch.randint(0, 4, (n, 6, 3, 3), generator=gen).float()  # few distinct values: many ties
    act[n - 1] = act[0]                                             # and equal images in different ranks
    channels = torch.tensor([0, 2, 3, 5])
    ranks = []
    for rank in range(world):
        running = RunningTopK(channels, k)
        ids = shard_indices(n, batch, rank, world)
        for first in range(0, len(ids), batch):
            part = torch.tensor(ids[first:first + batch])
            running.update(act[part], images=part)
        ranks.append(running)
    values, images, positions = merge_top_k(torch.stack([r.values for r in ranks]),
                                            torch.stack([r.images for r in ranks]),
                                            torch.stack([r.positions for r in ranks]), k)
    ref_values, ref_images, ref_positions = brute_force(act[:, channels], k)
    assert torch.equal(values, ref_values)
    assert torch.equal(images, ref_images)
    assert torch.equal(positions, ref_positions)
    one = RunningTopK(channels, k)                                  # the one-process path
    for first in range(0, n, batch):
        one.update(act[first:first + batch], first)
    assert torch.equal(one.values, values) and torch.equal(one.images, images)
    assert torch.equal(one.positions, positions)
    if n > k:
        assert any(len(set(row.tolist())) < k for row in values), "the data must contain ties"
    else:
        assert (images[:, n:] == -1).all() and torch.isinf(values[:, n:]).all()


def test_shard_indices_partition_the_global_batches():
    total, batch, world = 23, 4, 3
    shares = [shard_indices(total, batch, r, world) for r in range(world)]
    assert sorted(i for s in shares for i in s) == list(range(total))
    for rank, share in enumerate(shares):
        assert share == sorted(share)
        # whole global batches only, batch b on rank b % world
        assert {i // batch for i in share} == {b for b in range(6) if b % world == rank}
    assert shard_indices(10, 2, 1, 2) == [2, 3, 6, 7]
    assert shard_indices(3, 4, 1, 2) == []


# --------------------------------------------------------------------------------------------------
# sharded mining in one process against the one-process pass
# --------------------------------------------------------------------------------------------------
def small_zfnet():
    torch.manual_seed(0)
    return zfnet(widths=(8, 12, 16, 16, 10), fc=16, pool5_size=2, num_classes=4).eval()


@pytest.mark.parametrize("world, batch, limit, k", [(2, 3, None, 4), (3, 2, 9, 3), (3, 4, 5, 7)])
def test_sharded_mining_merges_to_the_one_process_result(world, batch, limit, k):
    model = small_zfnet()
    gen = torch.Generator().manual_seed(1)
    data = torch.randn(14, 3, 48, 48, generator=gen)
    data[9] = data[1]
    data[13] = data[4]
    one, seen, shape = mine(model, data, "conv4", k, batch_size=batch, limit=limit)
    shares = [mine(model, data, "conv4", k, batch_size=batch, limit=limit, shard=(r, world)) for r in range(world)]
    assert sum(s[1] for s in shares) == seen == (limit or 14)
    assert all(s[2] == shape for s in shares)                      # an empty share still knows the shape
    values, images, positions = merge_top_k(torch.stack([s[0].values for s in shares]),
                                            torch.stack([s[0].images for s in shares]),
                                            torch.stack([s[0].positions for s in shares]), k)
    assert torch.equal(values, one.values) and torch.equal(images, one.images)
    assert torch.equal(positions, one.positions)
    if limit == 5:                                                 # 5 images < k = 7: empty entries
        assert shares[2][1] == 0 and (images[:, 5:] == -1).all()


def test_distributed_argument():
    model = small_zfnet()
    data = torch.randn(2, 3, 48, 48)
    assert group_of(None) is None and group_of(False) is None
    with pytest.raises(IntrospectError, match="no torch.distributed process group is initialized"):
        top_k(model, data, layer="conv4", k=2, distributed=True)
    with pytest.raises(IntrospectError, match="None, True or False"):
        top_k(model, data, layer="conv4", k=2, distributed="yes")
    with pytest.raises(ValueError, match="bad image"):             # no group: the error itself
        check_ranks(ValueError("bad image"))
    check_ranks(None)


# --------------------------------------------------------------------------------------------------
# real processes
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """26 crops of scikit-image photographs; three are copies of others (exact ties): image 17 of
    image 4 (batch 4 on rank 0 against batch 1 on rank 1, with batches of 4), 21 of 14, 10 of 16."""
    import skimage.data
    from PIL import Image

    folder = tmp_path_factory.mktemp("dist") / "images"
    folder.mkdir()
    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(),
              np.stack([skimage.data.camera()] * 3, -1), skimage.data.rocket(), skimage.data.hubble_deep_field()]
    crops = []
    for photo in photos:
        h, w = photo.shape[:2]
        for a, b in [(0, 0), (1, 3), (1, 2), (2, 1), (1, 1)]:
            crops.append(photo[h * a // 4:h * a // 4 + 96, w * b // 5:w * b // 5 + 96])
    crops = crops[:26]
    crops[17], crops[21], crops[10] = crops[4], crops[14], crops[16]
    for n, crop in enumerate(crops):
        Image.fromarray(np.ascontiguousarray(crop)).save(folder / f"im{n:02d}.png")
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def torchrun_two(args: list[str]) -> subprocess.CompletedProcess:
    """``introspect ARGS`` under ``torchrun --nproc-per-node 2`` on a free port."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
           str(free_port()), "-m", "introspect.cli", *args]
    return subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=CHILD_TIMEOUT)


def top_args(checkpoint, folder, out):
    return ["top", str(checkpoint), str(folder), "--layer", "conv5", "--k", "5", "--batch-size", "4",
            "--limit", "24", "--device", "cpu", "--out", str(out), "--json"]


def test_torchrun_two_gloo_processes_equal_one_process(tiny_checkpoint, image_folder, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    result = CliRunner().invoke(build_cli(), top_args(tiny_checkpoint, image_folder, one))
    assert result.exit_code == 0, result.output
    proc = torchrun_two(top_args(tiny_checkpoint, image_folder, two))
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)                                   # rank 0 alone printed: one JSON document
    assert doc["processes"] == 2 and doc["images_seen"] == 24
    for name in ["top.json", "top.npy", "input.npy", "overview.png"] + [f"channels/ch{c:03d}.png" for c in range(8)]:
        assert (two / name).read_bytes() == (one / name).read_bytes(), name
    # the comparison covers ties between images mined by different ranks (batch b on rank b % 2)
    ranks_of_ties = set()
    for entry in doc["maps"]:
        top = entry["top"]
        for a, b in zip(top, top[1:]):
            if a["activation"] == b["activation"]:
                ranks_of_ties.add(frozenset({a["image"] // 4 % 2, b["image"] // 4 % 2}))
    assert frozenset({0, 1}) in ranks_of_ties


def test_torchrun_across_two_nodes_equals_one_process(tiny_checkpoint, image_folder, tmp_path):
    """Two torchrun launchers, one per "node" (--nnodes 2 --node-rank 0|1 on loopback, the usual
    static rendezvous): each node has LOCAL_RANK 0 only, and the node-rank-0 launcher's process writes."""
    one, two = tmp_path / "one", tmp_path / "two"
    result = CliRunner().invoke(build_cli(), top_args(tiny_checkpoint, image_folder, one))
    assert result.exit_code == 0, result.output
    port = str(free_port())
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(r),
                               "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", port,
                               "-m", "introspect.cli", *top_args(tiny_checkpoint, image_folder, two)],
                              env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in (0, 1)]
    try:
        outputs = [node.communicate(timeout=CHILD_TIMEOUT) for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    assert json.loads(outputs[0][0])["processes"] == 2 and outputs[1][0] == ""   # only global rank 0 prints
    for name in ["top.json", "top.npy", "input.npy", "overview.png"]:
        assert (two / name).read_bytes() == (one / name).read_bytes(), name


def rank_0_here_rank_1_in_a_child(monkeypatch, args: list[str]):
    """Run the command ``args`` as rank 0 of 2 in this process (``CliRunner``) and as rank 1 in a
    child process, with the environment torchrun sets but without torchrun (which would kill the
    survivor). Returns rank 0's click result and rank 1's ``(stdout, stderr, returncode)``."""
    env = {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    child = subprocess.Popen([sys.executable, "-m", "introspect.cli", *args],
                             env=child_env() | env | {"RANK": "1", "LOCAL_RANK": "1"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for name, value in (env | {"RANK": "0", "LOCAL_RANK": "0"}).items():
            monkeypatch.setenv(name, value)
        here = CliRunner().invoke(build_cli(), args)
        stdout, stderr = child.communicate(timeout=CHILD_TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
    return here, (stdout, stderr, child.returncode)


def test_a_failing_rank_stops_every_rank(monkeypatch, tiny_checkpoint, image_folder, tmp_path):
    """Rank 0 runs here, rank 1 in a child process: the error of rank 1 must reach rank 0 through
    the process group, and both must stop with one line and write nothing."""
    folder = tmp_path / "broken"
    shutil.copytree(image_folder, folder)
    (folder / "im05.png").write_text("not an image")               # in batch 1: rank 1's share
    out = tmp_path / "out"
    args = [*top_args(tiny_checkpoint, folder, out), "--timeout", "90"]
    here, (stdout, stderr, code) = rank_0_here_rank_1_in_a_child(monkeypatch, args)
    assert (here.exit_code, code) == (1, 1), here.output + stderr[-2000:]
    assert here.stdout == "" and stdout == ""
    assert "Error: rank 1 of 2 failed, so every rank stops:" in here.stderr and "im05.png" in here.stderr
    assert [line for line in stderr.splitlines() if line.startswith("Error:")][0].endswith(
        "im05.png is not an image Pillow can read (cannot identify image file "
        f"'{folder / 'im05.png'}'); pass a JPEG, PNG, WebP, BMP or TIFF file")
    assert "Traceback" not in here.output + stderr
    assert not out.exists()


def test_help_documents_torchrun():
    result = CliRunner().invoke(build_cli(), ["top", "--help"])
    assert result.exit_code == 0
    assert "torchrun --nproc-per-node" in result.output and "--timeout" in result.output
    assert "NCCL" in result.output and "Gloo" in result.output


@pytest.mark.parametrize("env, args, expected", [
    ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}, [], ["cannot join the 2 torchrun processes (gloo)",
                                                               "MASTER_ADDR", "launch with torchrun"]),
    ({"WORLD_SIZE": "two"}, [], ["WORLD_SIZE='two' is not a number"]),
    ({}, ["--timeout", "0"], ["Invalid value for '--timeout'"]),
])
def test_bad_launches_give_one_line(monkeypatch, tiny_checkpoint, image_folder, tmp_path, env, args, expected):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "out"
    result = CliRunner().invoke(build_cli(), ["top", str(tiny_checkpoint), str(image_folder), "--device", "cpu",
                                              "--out", str(out), *args])
    assert result.exit_code in (1, 2), result.output
    assert all(text in result.output for text in expected), result.output
    assert "Traceback" not in result.output and not out.exists()


def test_a_failed_launch_does_not_spoil_the_next_one(monkeypatch, tiny_checkpoint, image_folder, tmp_path):
    """A launch that cannot join (no MASTER_ADDR) leaves this process able to join two ranks later:
    torch counts the failed group, and a stale count makes the next rendezvous wait for keys that
    the other rank never writes."""
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    failed = CliRunner().invoke(build_cli(), top_args(tiny_checkpoint, image_folder, tmp_path / "never"))
    assert failed.exit_code == 1 and "cannot join the 2 torchrun processes" in failed.output
    out = tmp_path / "out"
    here, (stdout, stderr, code) = rank_0_here_rank_1_in_a_child(
        monkeypatch, [*top_args(tiny_checkpoint, image_folder, out), "--timeout", "60"])
    assert (here.exit_code, code) == (0, 0), here.output + stderr[-2000:]
    assert json.loads(here.stdout)["processes"] == 2
