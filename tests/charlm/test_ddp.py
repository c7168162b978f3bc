"""Two-process DistributedDataParallel training on CPU (gloo)."""

import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from rnnforge.charlm.train import LAST, Trainer

# the two multi-process tests run in one xdist worker, one after the other, so that
# their rendezvous ports (picked free, then bound later) can never race each other
pytestmark = pytest.mark.xdist_group("ddp")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, cfg, outdir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    t = Trainer(cfg)
    losses = []
    step = t.train_step
    t.train_step = lambda: losses.append(step()) or losses[-1]
    t.run()
    params = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    params["losses"] = torch.tensor(losses)
    save_file(params, os.path.join(outdir, f"rank{rank}.safetensors"))
    torch.distributed.destroy_process_group()


def test_two_processes_stay_identical_and_learn(tiny, tmp_path):
    cfg = tiny(steps=30, eval_every=15, out=str(tmp_path / "run"))
    mp.spawn(_worker, args=(2, _free_port(), cfg, str(tmp_path)), nprocs=2, join=True)
    r0 = load_file(tmp_path / "rank0.safetensors")
    r1 = load_file(tmp_path / "rank1.safetensors")
    for name in r0:
        if name != "losses":
            torch.testing.assert_close(r0[name], r1[name], rtol=0, atol=0, msg=name)
    # each rank sees its own shard of the streams, so the losses differ but both fall
    assert not torch.equal(r0["losses"], r1["losses"])
    for r in (r0, r1):
        assert r["losses"][-5:].mean() < 0.8 * r["losses"][:5].mean()
    assert (tmp_path / "run" / LAST).exists()  # rank 0 wrote the checkpoint


@pytest.mark.slow
def test_torchrun_command_line(corpus, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(_free_port()), "-m", "rnnforge", "train", "--data", str(corpus),
           "--steps", "4", "--eval-every", "2", "--hidden", "16", "--layers", "1", "--batch-size", "2",
           "--seq-len", "8", "--out", str(tmp_path / "run"), "--no-progress", "--no-tensorboard",
           "--threads", "1", "--device", "cpu"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    # a failing rank's own message comes first, the launcher's traceback after it
    assert res.returncode == 0, res.stderr[:1500] + "\n...\n" + res.stderr[-1500:]
    assert res.stdout.count("resolved config") == 1  # rank 0 alone prints and writes
    assert (tmp_path / "run" / LAST).exists()
