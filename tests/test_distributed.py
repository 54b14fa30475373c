"""Sharding runs across processes (torchrun, Gloo on CPU): the merged run folder equals a
single-process run, and interrupted sharded runs resume."""
import json
import os
import socket
import subprocess
import sys

import pytest

from joinbench.distributed import DistContext, env_context, shard
from joinbench.errors import JoinbenchError
from joinbench.registry import METHODS
from joinbench.runner import RunSettings, read_records, run_benchmark

ARGS = dict(method="retinex", dataset="materials", limit=7, resolution=16, batch_size=2, device="cpu",
            metrics=("mse", "ssim"), progress=False)


def _single(out):
    return run_benchmark(RunSettings(out=out, **ARGS))


def _scores(run_dir):
    """What must not depend on the process count: every record but its timing, in file order."""
    return [(r["id"], r["component"], r["error"], r["metrics"]) for r in read_records(run_dir / "records.jsonl")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_shard_deals_whole_batches_round_robin():
    ids = [f"i{k}" for k in range(7)]
    assert shard(ids, 2, 0, 2) == ["i0", "i1", "i4", "i5"]
    assert shard(ids, 2, 1, 2) == ["i2", "i3", "i6"]
    assert shard(ids, 2, 0, 1) == ids
    parts = [shard(ids, 3, r, 4) for r in range(4)]
    assert sorted(i for p in parts for i in p) == sorted(ids) and parts[3] == []


def test_environment_is_read_like_torchrun_sets_it(monkeypatch):
    for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(v, raising=False)
    assert env_context() == DistContext()  # a plain process
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert env_context() == DistContext(rank=2, world_size=4, local_rank=0)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(JoinbenchError, match=r"RANK=4 is outside 0\.\.3"):
        env_context()
    monkeypatch.delenv("RANK")
    with pytest.raises(JoinbenchError, match="WORLD_SIZE is set but RANK is not: launch .* with torchrun"):
        env_context()


def test_torchrun_two_processes_equal_one(tmp_path):
    single = _single(tmp_path / "single")
    out = tmp_path / "sharded"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), "-m", "joinbench", "run", "--method", ARGS["method"],
           "--dataset", ARGS["dataset"], "--limit", str(ARGS["limit"]), "--resolution", "16", "--batch-size", "2",
           "--device", "cpu", "--metrics", "mse,ssim", "-q", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("run folder:") == 1  # rank 0 alone prints
    assert _scores(out) == _scores(single)
    assert not list(out.glob("records.rank*.jsonl"))  # merged and removed
    s = json.loads((out / "summary.json").read_text())
    assert s["environment"]["distributed"]["world_size"] == 2 and s["environment"]["distributed"]["backend"] == "gloo"
    assert s["environment"]["distributed"]["images_per_rank"] == [4, 3]  # batches 0, 2 | 1, 3 of 2 images
    assert s["results"] == json.loads((single / "summary.json").read_text())["results"]
    def rows(path):  # the table itself; the header names the device, whose thread count may differ
        return [line for line in path.read_text().splitlines() if line.startswith("|")]

    assert (out / "grid.png").is_file() and rows(out / "table.md") == rows(single / "table.md")
    assert rows(out / "table.md")


def test_interrupted_sharded_run_resumes_in_one_process(tmp_path, monkeypatch):
    """A sharded run killed part-way leaves records.jsonl and per-rank files (one with a torn
    line); a rerun with another process count folds them in and decomposes only the rest."""
    full = _single(tmp_path / "full")
    recs = read_records(full / "records.jsonl")
    by_id = {}
    for r in recs:
        by_id.setdefault(r["id"], []).append(r)
    ids = list(by_id)
    part = tmp_path / "part"
    _single(part)
    (part / "summary.json").unlink()

    def write(name, rows, torn=""):
        (part / name).write_text("".join(json.dumps(r) + "\n" for r in rows) + torn)

    write("records.jsonl", by_id[ids[0]] + by_id[ids[1]])
    write("records.rank1.jsonl", by_id[ids[3]] + by_id[ids[2]])  # out of order, as ranks finish
    write("records.rank0.jsonl", by_id[ids[4]] + by_id[ids[5]][:2], torn='{"id": "mat')  # image 5 unfinished
    entry, _ = METHODS.get(ARGS["method"])
    seen = []
    original = entry.factory.decompose

    def counting(self, images):
        seen.append(images.shape[0])
        return original(self, images)

    monkeypatch.setattr(entry.factory, "decompose", counting)
    _single(part)
    assert sum(seen) == 2  # images 5 and 6 only
    assert _scores(part) == _scores(full)
    assert not list(part.glob("records.rank*.jsonl"))
    assert json.loads((part / "summary.json").read_text())["results"] == \
        json.loads((full / "summary.json").read_text())["results"]
