"""Faults and bad input: every case ends in one clear line (exit 2, or 130 for Ctrl-C) naming the key or file and what
to do; no traceback, nothing accepted silently, nothing lost. The CLI runs in this process (``cli.main``), as DVC
would run it in a subprocess; an exception escaping ``main`` fails the test."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import ROOT
from uniinstruct import cli
from uniinstruct.training import checkpoint, ddp
from uniinstruct.training.checkpoint import CorruptFileError

PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def mutate(path: str, value):
    """A params.yaml edit: set the value at a dotted path (``value is DELETE`` removes the key)."""
    def apply(params):
        *parents, last = path.split(".")
        node = params
        for key in parents:
            node = node[key]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
        return params
    return apply


DELETE = object()

# (case, params edit, command after `uniinstruct`, what the one-line error must say)
BAD_PARAMS = [
    ("sigma_min above sigma_max", mutate("toy.distill.sigma_min", 100.0), "toy distill",
     "sigma_max: must be > sigma_min"),
    ("tmax beyond the schedule", mutate("toy.distill.tmax", 5000.0), "toy distill", "tmax: must be in (0, 1000]"),
    ("negative grad_clip", mutate("toy.distill.grad_clip", -1.0), "toy distill", "grad_clip: must be > 0"),
    ("negative ema_rampup", mutate("toy.distill.ema_rampup", -1.0), "toy distill", "ema_rampup: must be ≥ 0"),
    ("infinite lr", mutate("toy.distill.lr", float("inf")), "toy distill", "lr: expected a finite number"),
    ("NaN glr", mutate("toy.distill.glr", float("nan")), "toy distill", "glr: expected a finite number"),
    ("rho zero", mutate("toy.distill.rho", 0.0), "toy distill", "rho: must be > 0"),
    ("betas of one value", mutate("toy.distill.betas", [0.9]), "toy distill", "betas: must be [β1, β2]"),
    ("beta of one", mutate("toy.distill.betas", [0.0, 1.0]), "toy distill", "betas: must be [β1, β2]"),
    ("negative lsg", mutate("toy.distill.lsg", -1.0), "toy distill", "lsg: must be ≥ 0"),
    ("a deleted key", mutate("digits.distill.lr", DELETE), "digits teacher", "digits.distill.lr: missing key"),
    ("a deleted nested section", mutate("toy.ceiling", DELETE), "toy teacher", "toy.ceiling: missing key"),
    ("a misspelled section", lambda p: {**p, "toyy": p["toy"]}, "toy teacher", "unknown section 'toyy'"),
    ("an unknown key", mutate("toy.distill.lr_g", 1e-3), "toy distill", "toy.distill.lr_g: unknown key"),
    ("a string for a number", mutate("toy.distill.lr", "fast"), "toy distill", "lr: expected a finite number"),
    ("an unknown device", mutate("digits.distill.device", "tpu"), "digits distill", "device: must be cpu or cuda"),
    ("an unknown divergence", mutate("toy.distill.divergence", "kl"), "toy distill", "unknown divergence 'kl'"),
    ("an unknown benchmark", mutate("toy.benchmark", "ring9"), "toy teacher", "ring9"),
    ("an unknown reference pair", mutate("unification.reference_pair", "nope"), "notebook tables/unification",
     "unification.reference_pair: unknown toy pair 'nope'"),
]


def run(argv, capsys) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize("case, edit, command, message", BAD_PARAMS, ids=[c[0] for c in BAD_PARAMS])
def test_bad_params_are_one_clear_line(case, edit, command, message, tmp_path, capsys):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(edit(copy.deepcopy(PARAMS)), allow_unicode=True))
    dirs = ["--out-dir" if command.startswith("notebook") else "--teacher-dir", tmp_path / "teacher"]
    code, err = run([*command.split(), "--params", path, *dirs], capsys)
    assert code == 2 and err.startswith("uniinstruct: error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert not (tmp_path / "teacher").exists()          # rejected before any work


def test_yaml_syntax_error_names_the_line(tmp_path, capsys):
    path = tmp_path / "params.yaml"
    lines = (ROOT / "params.yaml").read_text().splitlines()
    lines.insert(2, "theory: sigma: 1")                    # "mapping values are not allowed here"
    path.write_text("\n".join(lines))
    code, err = run(["toy", "teacher", "--params", path, "--teacher-dir", tmp_path / "teacher"], capsys)
    assert code == 2 and err.count("\n") == 1 and "not valid YAML at line 3, column 14" in err, err


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_toy_teacher", interrupted)
    code, err = run(["toy", "teacher", "--teacher-dir", "/nonexistent/never-written"], capsys)
    assert code == 130 and err.count("\n") == 1 and "rerun the same command to resume" in err


def test_zero_threads_is_refused_before_any_work(tmp_path, capsys):
    code, err = run(["digits", "teacher", "--threads", "0", "--teacher-dir", tmp_path / "teacher"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--threads must be at least 1, got 0" in err, err
    assert not (tmp_path / "teacher").exists()


def test_cuda_on_a_machine_without_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="sees no CUDA GPU; set device: cpu"):
        ddp.local_device("cuda")
    assert ddp.local_device("cpu") == torch.device("cpu")


def test_convert_onto_itself_is_refused_and_keeps_the_source(tmp_path, capsys):
    src = tmp_path / "net.pkl"
    src.write_bytes(b"not even a pickle")
    code, err = run(["teacher", "convert", src, src], capsys)
    assert code == 2 and "onto itself" in err and src.read_bytes() == b"not even a pickle"


@pytest.mark.parametrize("damage", ["flip a data bit", "truncate", "garbage"])
def test_corrupt_files_are_named_never_loaded(damage, tmp_path):
    path = checkpoint.save_atomic({"w": torch.arange(1000.0), "iteration": 7}, tmp_path / "checkpoint.pt")
    data = bytearray(path.read_bytes())
    if damage == "flip a data bit":
        data[len(data) // 2] ^= 0x10          # inside the tensor's record
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray(b"\x00" * len(data))
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match=r"checkpoint\.pt.*delete it and rerun"):
        checkpoint.load(path)
    with pytest.raises(FileNotFoundError, match="run the stage that writes it"):
        checkpoint.load(tmp_path / "missing.pt")


def test_a_killed_save_leaves_no_orphan_and_the_old_file(tmp_path):
    path = checkpoint.save_atomic({"w": torch.zeros(3)}, tmp_path / "checkpoint.pt")
    orphan = tmp_path / ".checkpoint.pt.abc123.tmp"       # what a save killed before its rename leaves
    orphan.write_bytes(b"partial")
    assert torch.equal(checkpoint.load(path)["w"], torch.zeros(3))
    checkpoint.save_atomic({"w": torch.ones(3)}, path)
    assert not orphan.exists() and torch.equal(checkpoint.load(path)["w"], torch.ones(3))


def test_a_background_write_holds_the_state_at_submission_and_raises_its_error(tmp_path, monkeypatch):
    """The writer copies the state before it returns: an update made while the thread writes is not in the file."""
    writer, weights = checkpoint.BackgroundWriter(), torch.zeros(1000)
    writer.submit([({"w": weights, "history": [{"loss": 1.0}]}, tmp_path / "a.pt")])
    weights.add_(1.0)
    writer.wait()
    assert torch.equal(checkpoint.load(tmp_path / "a.pt")["w"], torch.zeros(1000))
    with pytest.raises(FloatingPointError, match="refusing to checkpoint non-finite tensors: w"):
        writer.submit([({"w": torch.tensor([float("nan")])}, tmp_path / "a.pt")])
    assert torch.equal(checkpoint.load(tmp_path / "a.pt")["w"], torch.zeros(1000))

    def disk_full(path, write, mode="wb"):
        raise OSError(28, "No space left on device", str(path))
    monkeypatch.setattr(checkpoint, "write_atomic", disk_full)
    writer.submit([({"w": torch.ones(3)}, tmp_path / "a.pt")])      # returns: the error is the thread's
    with pytest.raises(OSError, match="No space left on device"):
        writer.wait()
    writer.wait()                                                    # raised once, then cleared
    assert torch.equal(checkpoint.load(tmp_path / "a.pt")["w"], torch.zeros(1000))


def test_resume_past_the_iterations_is_refused(tmp_path, capsys, tiny_toy_params):
    """A finished run re-invoked with fewer iterations must not write a run.json that misstates its training."""
    where = ["--teacher-dir", tmp_path / "teacher", "--runs-dir", tmp_path / "runs", "--quiet"]
    long = tiny_toy_params(iterations=6, batch=16, warmup_fake_images=16, warmup_sim_images=32, checkpoint_every=3)
    assert run(["toy", "teacher", "--params", long, *where[:2], "--quiet"], capsys)[0] == 0
    assert run(["toy", "distill", "--params", long, *where], capsys)[0] == 0
    record = (tmp_path / "runs" / "ui-fkl-exact-s0" / "run.json").read_text()
    short = tiny_toy_params(iterations=3)
    code, err = run(["toy", "distill", "--params", short, *where], capsys)
    assert code == 2 and "at iteration 6, past iterations: 3" in err, err
    assert (tmp_path / "runs" / "ui-fkl-exact-s0" / "run.json").read_text() == record
    (tmp_path / "runs" / "ui-fkl-exact-s0" / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    code, err = run(["toy", "distill", "--params", long, *where], capsys)
    assert code == 2 and err.count("\n") == 1 and "checkpoint.pt is truncated" in err, err


def test_a_failed_download_through_the_paper_stage_is_one_line(tmp_path, capsys, monkeypatch):
    """`uniinstruct paper teacher` with the network unreachable (a closed local port): one line naming the file and
    the URL after the retries, exit 2, no partial teacher."""
    from dataclasses import replace

    from uniinstruct.teachers import download, registry

    name = "edm-cifar10-32x32-uncond-vp"
    monkeypatch.setitem(registry.ARTIFACTS, name, replace(registry.ARTIFACTS[name], url="http://127.0.0.1:9/edm.pkl"))
    monkeypatch.setattr(download, "_BACKOFF_S", 0.0)
    params = copy.deepcopy(PARAMS)
    params["paper"]["folder"] = str(tmp_path / "paper_runs")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, allow_unicode=True))
    code, err = run(["paper", "teacher", "--profile", "cifar10-uncond", "--params", path, "--quiet"], capsys)
    assert code == 2 and err.count("\n") == 1 and "failed after 4 attempt(s)" in err and "127.0.0.1:9" in err, err
    assert not list((tmp_path / "paper_runs").rglob("*.pt"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("rank, where, kind", [(1, "step", "ValueError"), (0, "save", "OSError")])
def test_a_failure_in_one_process_stops_every_process(tmp_path, rank, where, kind):
    """Two gloo processes, started without torchrun's agent (which would kill the survivor and hide the bug): a bad
    value in one process's generator step, or a full disk when the first process saves, must end both processes
    promptly with the failing process's error, not leave the other waiting in its next collective (gloo's timeout is
    30 minutes; the test allows 120 s)."""
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2"}
    worker = [sys.executable, str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path / "run"), "--fail", f"{rank}:{where}"]
    procs = [subprocess.Popen(worker, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stderr=subprocess.PIPE,
                              text=True) for r in range(2)]
    try:
        errors = [proc.communicate(timeout=120)[1] for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    assert [proc.returncode for proc in procs] == [2, 2], errors
    injected = "injected"
    assert f"rank {rank}: {kind}:" in errors[rank] and injected in errors[rank], errors[rank]
    other = 1 - rank
    assert f"rank {other}: Peer{kind}: process {rank} of 2 stopped: {kind}:" in errors[other], errors[other]
    assert injected in errors[other]
