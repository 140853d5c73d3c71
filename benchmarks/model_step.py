"""What does text conditioning cost? One CPU run, JSON on stdout.

Measures, at --size (256) with --batch (4) images, --classes (29) classes, and random text tokens
standing in for a warm caption cache (30 meta tokens + one token per class, width 512, so no text
transformer runs):
  train_step          median optimizer-step time (forward, BCE, backward, AdamW), cross_attn (text) vs
                      none (no text); ratio <= 1.15
  predict             median prediction time, one pass for all classes vs a CLIPSeg-style loop of one
                      forward per class (each conditioned on that class's caption); speedup >= 10
  peak_rss_delta_mb   peak resident memory increase of each case, each in its own subprocess
                      (VmHWM - VmRSS before the steps; training includes the AdamW state)
  params              parameter counts for {none, cross_attn, film} x {conv, text_query}
Timed cases are interleaved (order rotated each round) after warm-up so that load from other processes
hits both alike; the median of per-round paired ratios is reported beside the ratio of medians.
The primary timings keep freed memory in the process (mallopt: no heap trim, no mmap), as PyTorch's
caching allocator does on GPU; glibc's default policy returns activations to the kernel and faults
them in again each step (sys time that grows with the number of odd-sized activations). The train
ratio under the default policy is measured first and reported too.

    .venv/bin/python benchmarks/model_step.py [--encoder resnet18] [--size 256] [--reps 7]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

from mmseg_text.config import ModelConfig
from mmseg_text.cpu_memory import keep_freed_memory
from mmseg_text.models import TextContext, build_model, count_parameters

META_TOKENS = 30


def parse_args(argv: List[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--classes", type=int, default=29)
    p.add_argument("--text-dim", type=int, default=512)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--predict-reps", type=int, default=3)
    p.add_argument("--allocator", choices=["keep", "glibc"], default="keep",
                   help="keep: glibc never trims/unmaps freed memory (as PyTorch's caching allocator on GPU, "
                        "or jemalloc); glibc: the default policy, whose page faults land mostly on the model "
                        "with more, odd-sized activations. The train ratio is measured under both.")
    p.add_argument("--memory-case", default=None, help=argparse.SUPPRESS)  # internal: one case per subprocess
    return p.parse_args(argv)


def model_for(args: argparse.Namespace, conditioning: str, head: str = "conv", num_classes: int | None = None):
    torch.manual_seed(0)
    cfg = ModelConfig(encoder=args.encoder, conditioning=conditioning, head=head)
    return build_model(cfg, num_classes=num_classes or args.classes, text_dim=args.text_dim, image_size=args.size)


def caption_context(args: argparse.Namespace, n_tokens: int) -> TextContext:
    g = torch.Generator().manual_seed(1)
    b, d = args.batch, args.text_dim
    mask = torch.ones(b, n_tokens, dtype=torch.bool)
    mask[0, META_TOKENS - 5:META_TOKENS] = False  # a shorter caption, padded
    return TextContext(torch.randn(b, n_tokens, d, generator=g), mask, torch.randn(b, d, generator=g),
                       torch.randn(args.classes, d, generator=g))


def inputs(args: argparse.Namespace):
    g = torch.Generator().manual_seed(2)
    images = torch.randn(args.batch, 3, args.size, args.size, generator=g)
    target = (torch.rand(args.batch, args.classes, args.size, args.size, generator=g) > 0.9).float()
    return images, target


def train_step_fn(model, images, target, context) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        loss = F.binary_cross_entropy_with_logits(model(images, context), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def predict_fns(args: argparse.Namespace, images) -> Dict[str, Callable[[], None]]:
    one_pass = model_for(args, "cross_attn").eval()
    per_class = model_for(args, "cross_attn", num_classes=1).eval()
    full = caption_context(args, META_TOKENS + args.classes)
    # CLIPSeg-style: caption k = class k's token + the metadata tokens; one forward per class.
    meta_tokens, meta_mask = full.tokens[:, :META_TOKENS], full.mask[:, :META_TOKENS]
    per_class_ctx = [TextContext(torch.cat([full.tokens[:, META_TOKENS + k:META_TOKENS + k + 1], meta_tokens], 1),
                                 torch.cat([full.mask[:, :1], meta_mask], 1), full.pooled)
                     for k in range(args.classes)]

    @torch.inference_mode()
    def run_one_pass() -> None:
        one_pass(images, full)

    @torch.inference_mode()
    def run_per_class() -> None:
        torch.cat([per_class(images, ctx) for ctx in per_class_ctx], dim=1)
    return {"one_pass": run_one_pass, "per_class_loop": run_per_class}


def train_fns(args: argparse.Namespace, images, target) -> Dict[str, Callable[[], None]]:
    context = caption_context(args, META_TOKENS + args.classes)
    return {"text_cross_attn": train_step_fn(model_for(args, "cross_attn"), images, target, context),
            "no_text": train_step_fn(model_for(args, "none"), images, target, None)}


def interleaved_times(fns: Dict[str, Callable[[], None]], warmup: int, reps: int) -> Dict[str, Dict[str, List[float]]]:
    """Wall and process-CPU seconds per case; the cases alternate (order rotated each round) so that
    load from other processes hits them alike."""
    names = list(fns)
    times: Dict[str, Dict[str, List[float]]] = {"wall": {n: [] for n in names}, "cpu": {n: [] for n in names}}
    for i in range(warmup + reps):
        for name in names[i % len(names):] + names[:i % len(names)]:
            t0, c0 = time.perf_counter(), time.process_time()
            fns[name]()
            if i >= warmup:
                times["wall"][name].append(time.perf_counter() - t0)
                times["cpu"][name].append(time.process_time() - c0)
    return times


def summary(times: Dict[str, Dict[str, List[float]]], numerator: str, denominator: str) -> Dict[str, object]:
    """Median wall times, their ratio, the median of per-round (paired) ratios, and the CPU-time ratio."""
    wall, cpu = times["wall"], times["cpu"]
    med = statistics.median
    return {"median_s": {k: round(med(v), 4) for k, v in wall.items()},
            "ratio_of_medians": round(med(wall[numerator]) / med(wall[denominator]), 3),
            "median_paired_ratio": round(med([a / b for a, b in zip(wall[numerator], wall[denominator])]), 3),
            "cpu_time_ratio_of_medians": round(med(cpu[numerator]) / med(cpu[denominator]), 3)}


def status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def memory_case(args: argparse.Namespace) -> Dict[str, float]:
    """Run one case twice in this (fresh) process; peak RSS growth over the state before the steps."""
    images, target = inputs(args)
    case = args.memory_case
    fns = train_fns(args, images, target) if case in ("text_cross_attn", "no_text") else predict_fns(args, images)
    fn = fns[case]
    for other in list(fns):  # keep only this case's model alive
        if other != case:
            del fns[other]
    before = status_kb("VmRSS")
    try:  # reset the high-water mark to the current RSS (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        pass
    fn()
    fn()
    return {"peak_rss_delta_mb": round((status_kb("VmHWM") - before) / 1024, 1)}


def measure_memory(args: argparse.Namespace, case: str) -> float:
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-case", case, "--allocator", args.allocator,
           "--encoder", args.encoder,
           "--size", str(args.size), "--batch", str(args.batch), "--classes", str(args.classes),
           "--text-dim", str(args.text_dim)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_rss_delta_mb"]


def parameter_counts(args: argparse.Namespace) -> Dict[str, int]:
    return {f"{cond}/{head}": count_parameters(model_for(args, cond, head))
            for cond in ("none", "cross_attn", "film") for head in ("conv", "text_query")}


def main(argv: List[str] | None = None) -> Dict[str, object]:
    args = parse_args(argv)
    if args.memory_case:
        if args.allocator == "keep":
            keep_freed_memory()
        result: Dict[str, object] = dict(memory_case(args))
        print(json.dumps(result))
        return result
    images, target = inputs(args)
    train_glibc = None
    if args.allocator == "keep":  # first the default policy (mallopt cannot be undone), then the primary one
        train_glibc = summary(interleaved_times(train_fns(args, images, target), args.warmup, args.reps),
                              "text_cross_attn", "no_text")
        kept = keep_freed_memory()
    else:
        kept = False
    train = summary(interleaved_times(train_fns(args, images, target), args.warmup, args.reps),
                    "text_cross_attn", "no_text")
    predict = summary(interleaved_times(predict_fns(args, images), 1, args.predict_reps), "per_class_loop", "one_pass")
    cfg = ModelConfig()
    result = {
        "setup": {"encoder": args.encoder, "image_size": args.size, "batch": args.batch, "classes": args.classes,
                  "text_tokens": META_TOKENS + args.classes, "text_dim": args.text_dim,
                  "decoder_channels": cfg.decoder_channels, "condition_stages": cfg.condition_stages,
                  "attn_heads": cfg.attn_heads, "attn_ff_mult": cfg.attn_ff_mult, "device": "cpu",
                  "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                  "allocator": "glibc, freed memory kept (mallopt)" if kept else "glibc default",
                  "warmup": args.warmup,
                  "reps": args.reps, "predict_reps": args.predict_reps},
        "train_step": train,
        "train_text_overhead_ratio": train["ratio_of_medians"],
        "train_step_glibc_default_allocator": train_glibc,
        "predict": predict,
        "predict_speedup_one_pass": predict["ratio_of_medians"],
        "peak_rss_delta_mb": {case: measure_memory(args, case)
                              for case in ("text_cross_attn", "no_text", "one_pass", "per_class_loop")},
        "params": parameter_counts(args),
    }
    result["checks"] = {"train_ratio_le_1.15": result["train_text_overhead_ratio"] <= 1.15,
                        "predict_speedup_ge_10": result["predict_speedup_one_pass"] >= 10}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
