"""Time one full Uni-Instruct iteration (fake score + discriminator update, then generator update) at each paper
profile's network size, on random data, in fp32 and bf16; print images/s, peak memory, the model FLOPs of an
iteration (``torch.utils.flop_counter``, counted on the warm-up iteration) and the model-FLOP utilisation against
the device's dense peak for the precision (``PEAK_TFLOPS``: an H200's datasheet figures; on a CPU none).

    python benchmarks/distill_step.py                          # every profile, full size, on cuda if available
    python benchmarks/distill_step.py --channels 32 --batch 4   # a reduced size for a CPU

Full-size networks on a CPU take minutes per iteration: pass ``--channels`` to shrink ``model_channels`` and say so
when you report the figures (the script prints the parameter count it measured).
"""

from __future__ import annotations

import argparse
import copy
import resource
import time
import warnings

import torch
from torch.utils.flop_counter import FlopCounterMode

from uniinstruct.networks import parameter_count
from uniinstruct.networks.edm_unets import adm_imagenet64, ddpmpp_cifar10
from uniinstruct.training.distill import DistillConfig, Distiller

PROFILES = {   # name: (network factory, classes, image shape, batch per GPU in the released scripts)
    "cifar10-uncond": (lambda **kw: ddpmpp_cifar10(label_dim=0, **kw), 0, (3, 32, 32), 128),
    "cifar10-cond": (lambda **kw: ddpmpp_cifar10(label_dim=10, **kw), 10, (3, 32, 32), 32),
    "imagenet64-cond": (lambda **kw: adm_imagenet64(label_dim=1000, **kw), 1000, (3, 64, 64), 8),
}


# dense tensor-core peaks of an H200 SXM (NVIDIA's datasheet; the sparse figures are twice these), TFLOP/s
PEAK_TFLOPS = {"bf16": 989.0, "tf32": 494.0, "fp32": 67.0}


def synchronisations(step) -> int:
    """How many times ``step()`` makes the host wait for the GPU (torch's sync debug mode warns at each)."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def measure(profile: str, precision: str, device: str, batch: int | None, channels: int | None, steps: int,
            **settings) -> dict:
    """Seconds per iteration, images/s, peak memory, FLOPs and MFU of one profile (``settings``: DistillConfig keys,
    e.g. channels_last, cudnn_benchmark)."""
    factory, classes, shape, default_batch = PROFILES[profile]
    batch = batch or default_batch
    overrides = {"model_channels": channels} if channels else {}
    torch.manual_seed(0)
    teacher = factory(**overrides).eval().requires_grad_(False)
    cfg = DistillConfig(divergence="jkl", batch=batch, iterations=steps + 1, warmup_fake_images=0,
                        warmup_sim_images=0, device=device, precision=precision,
                        ratio_n_dims=shape[0] * shape[1] * shape[2], **settings)
    real = lambda n, gen: (torch.rand(n, *shape, generator=gen) * 2 - 1,   # noqa: E731
                           torch.randint(max(classes, 1), (n,), generator=gen) if classes else None)
    d = Distiller(cfg, teacher, copy.deepcopy(teacher).requires_grad_(True),
                  copy.deepcopy(teacher).requires_grad_(True), real, 0.5, classes)
    start = time.perf_counter()
    if settings.get("compile"):
        d.step()                              # warm-up: compiles every pass (the FLOPs are the eager run's)
        flops = None
    else:
        with FlopCounterMode(display=False) as counter:
            d.step()                          # warm-up (allocations, kernels), its FLOPs counted
        flops = counter.get_total_flops()
    warmup = time.perf_counter() - start
    syncs = synchronisations(d.step) if device.startswith("cuda") else None
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        d.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20     # kB -> GiB (process peak)
    seconds = (time.perf_counter() - start) / steps
    return {"profile": profile, "precision": precision, "device": device, "parameters": parameter_count(teacher),
            "batch": batch, **settings, "s_per_iteration": seconds, "images_per_s": batch / seconds,
            "peak_memory_gib": peak, "warmup_s": warmup, "host_synchronisations_per_iteration": syncs,
            **utilisation(flops, seconds, precision, device)}


def utilisation(flops: float | None, seconds: float, precision: str, device: str) -> dict:
    """TFLOP per iteration and per second, and the MFU against the device's peak (None where unknown)."""
    peak = PEAK_TFLOPS[precision] if device.startswith("cuda") else None
    tflop = None if flops is None else flops / 1e12
    return {"tflop_per_iteration": tflop, "tflop_per_s": None if tflop is None else tflop / seconds,
            "mfu": tflop / seconds / peak if tflop is not None and peak else None, "peak_tflops": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=list(PROFILES))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "tf32", "bf16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=None,
                        help="images per iteration (default: the profile's per-GPU batch)")
    parser.add_argument("--channels", type=int, default=None, help="model_channels (default: the profile's own)")
    parser.add_argument("--steps", type=int, default=3, help="timed iterations")
    args = parser.parse_args()
    print(f"{'profile':16s} {'precision':9s} {'device':6s} {'params':>11s} {'batch':>5s} {'s/it':>8s} "
          f"{'img/s':>8s} {'peak GiB':>8s} {'TFLOP/it':>8s} {'MFU':>6s}")
    for profile in args.profiles:
        for precision in args.precisions:
            r = measure(profile, precision, args.device, args.batch, args.channels, args.steps)
            print(f"{r['profile']:16s} {r['precision']:9s} {r['device']:6s} {r['parameters']:11,d} {r['batch']:5d} "
                  f"{r['s_per_iteration']:8.3f} {r['images_per_s']:8.2f} {r['peak_memory_gib']:8.2f} "
                  f"{r['tflop_per_iteration'] or float('nan'):8.3f} {'' if r['mfu'] is None else format(r['mfu'], '6.1%')}",
                  flush=True)


if __name__ == "__main__":
    main()
