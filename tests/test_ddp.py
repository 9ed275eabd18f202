"""Scale-out: the sample stream sharded by rank, 2-process gloo runs under torchrun, autocast steps."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distill.data.sampling import SampleStream
from distill.data.synthetic import generate_synthetic
from distill.ddp import ShardedStream, resolve_amp
from distill.runs import LAST, LOG, Runtime, TrainConfig, load_checkpoint
from distill.teachers.training import TeacherConfig, TeacherTrainer
from distill.train import Trainer
from service.model import ModelStore, stkd_student

REPO = Path(__file__).resolve().parents[1]
SIZE = 64


def test_shards_of_a_global_batch_are_the_single_process_batch() -> None:
    batch, world = 4, 2
    for start_step in (0, 3):
        single = list(itertools.islice(SampleStream(5, seed=2, start=start_step * batch), 3 * batch))
        shards = [list(itertools.islice(ShardedStream(SampleStream(5, seed=2, start=start_step * batch), rank, world),
                                        3 * batch // world)) for rank in range(world)]
        for step in range(3):
            global_batch = single[step * batch : (step + 1) * batch]
            per_rank = [shard[step * batch // world : (step + 1) * batch // world] for shard in shards]
            assert sorted(itertools.chain(*per_rank)) == sorted(global_batch), (start_step, step)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate_synthetic(root, num_sequences=2, frames_per_sequence=5, seed=8, size=(64, 96), split="train")
    return root


def test_autocast_bf16_step_on_cpu(synth_root: Path, tmp_path: Path) -> None:
    """The AMP code path (autocast around forward and losses, scaler disabled for bf16) trains."""
    torch.set_num_threads(1)
    assert resolve_amp("auto", torch.device("cpu")) == "off"
    with pytest.raises(ValueError, match="needs CUDA"):
        resolve_amp("fp16", torch.device("cpu"))
    config = TrainConfig(data=[("davis", str(synth_root))], input_size=(SIZE, SIZE), batch=2, steps=2, warmup=1)
    trainer = Trainer(config, Runtime(tmp_path, progress=False, amp="bf16"))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    terms = trainer.train_step(next(trainer.batches()))
    assert torch.isfinite(torch.tensor(terms["loss"])) and terms["loss"] > 0
    assert all(v.dtype == before[k].dtype for k, v in trainer.model.state_dict().items())  # weights stay float32
    assert any(not torch.equal(v, before[k]) for k, v in trainer.model.state_dict().items())


def torchrun(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "distill.cli", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"})


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / LOG).read_text().splitlines()]


def test_two_gloo_processes_distil_into_a_loadable_checkpoint(synth_root: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    teacher = TeacherConfig(data=[("davis", str(synth_root))], kind="spatial", input_size=(SIZE, SIZE), clip_len=1,
                            batch=2, steps=1, warmup=1, width_mult=0.35, channels=16)
    TeacherTrainer(teacher, Runtime(tmp_path / "teacher", progress=False)).run()

    run = tmp_path / "ddp"
    done = torchrun("distill", "--data", str(synth_root), "--out", str(run), "--input-size", str(SIZE), "--batch", "2",
                    "--steps", "2", "--warmup", "1", "--threads", "1", "--log-every", "1", "--no-progress",
                    "--spatial-teacher", str(tmp_path / "teacher" / LAST), "--teacher-cache", str(tmp_path / "cache"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("stopped at step 2") == 1  # only rank 0 reports

    log = read_log(run)
    starts = [r for r in log if r.get("event") == "start"]
    assert len(starts) == 1 and starts[0]["world_size"] == 2 and starts[0]["device"] == "cpu"
    assert [r["step"] for r in log if "loss" in r and "event" not in r] == [1, 2]  # one writer: no duplicate lines
    checkpoint = load_checkpoint(run / LAST)
    assert checkpoint["step"] == 2 and set(checkpoint["model"]) == set(stkd_student().state_dict())
    # Each rank cached its own share of the 2 clips per step.
    assert len(list(next((tmp_path / "cache").iterdir()).glob("*.pt"))) == 4

    store = tmp_path / "store"
    exported = subprocess.run([sys.executable, "-m", "distill.cli", "export", "--checkpoint", str(run / LAST),
                               "--name", "ddp", "--store", str(store), "--speed-frames", "1", "--no-progress"],
                              cwd=REPO, capture_output=True, text=True, check=False, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert exported.returncode == 0, exported.stderr
    model, _ = ModelStore(store).load("ddp")
    assert torch.isfinite(model(torch.rand(1, 3, SIZE, SIZE)).logits).all()


def test_two_gloo_processes_agree_on_a_time_budget(synth_root: Path, tmp_path: Path) -> None:
    """Without --steps the schedule is fitted to the budget and the stop decided by rank 0 for both."""
    run = tmp_path / "timed"
    done = torchrun("train", "--data", str(synth_root), "--out", str(run), "--input-size", str(SIZE), "--batch", "2",
                    "--max-minutes", "0.03", "--warmup", "1", "--threads", "1", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    stop = read_log(run)[-1]
    assert stop["event"] == "stop" and stop["reason"] in ("time budget", "steps")
    assert load_checkpoint(run / LAST)["step"] == stop["step"] >= 1
