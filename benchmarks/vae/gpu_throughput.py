"""Training throughput of eoflow's ByteVAE at ByT5-small size, next to Hugging Face's T5 baseline.

Measures optimizer steps of the real pretraining loss (span-corruption cross-entropy + beta * KL
with free bits) on random byte ids at ByT5's pre-training shapes (inputs 1024, targets 189), bf16
autocast, fused AdamW on CUDA, gradient clipping 1.0, optionally ``torch.compile``.  Batch sizes
are probed largest-first with a full step each (OOM -> next), then ``--warmup`` untimed and
``--steps`` timed steps.  When ``transformers`` is importable, the HF baseline script
(``--hf-bench PATH``, default ``../shared/bench/hf_byt5_bench.py``) runs in the same invocation
with the same shapes, dtype and compile flag, so both numbers come from one machine.

    tokens/s = batch * (input_len + target_len) / mean step time

    python -m benchmarks.vae.gpu_throughput --device cuda [--compile] [--hf-bench PATH]
    python -m benchmarks.vae.gpu_throughput --tiny --device cpu      # smoke test

Prints ONE JSON line (``eoflow`` and ``hf`` results, ``speedup``); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_HF_BENCH = REPO.parent / "shared" / "bench" / "hf_byt5_bench.py"
BATCHES_CUDA = "128,96,64,48,32,24,16,8,4,2,1"
BATCHES_TINY = "4,2,1"
TINY = dict(
    d_model=64, d_kv=16, n_heads=4, d_ff=128, n_enc_layers=2, n_dec_layers=1, latent_dim=16, n_mem=4
)


def log(msg: str) -> None:
    print(f"[gpu_throughput] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--tiny", action="store_true", help="tiny config (smoke test)")
    p.add_argument("--input-len", type=int, default=1024)
    p.add_argument("--target-len", type=int, default=189)
    p.add_argument(
        "--batch-sizes", default=None, help=f"probed largest-first (default {BATCHES_CUDA})"
    )
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 20; tiny 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps (default 5; tiny 1)")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--latent-dim", type=int, default=None)
    p.add_argument("--n-mem", type=int, default=None)
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak, for MFU")
    p.add_argument("--hf-bench", type=Path, default=None, help="path of hf_byt5_bench.py")
    p.add_argument("--no-hf", action="store_true", help="skip the Hugging Face baseline")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    if a.batch_sizes is None:
        a.batch_sizes = BATCHES_TINY if a.tiny else (BATCHES_CUDA if a.device == "cuda" else "1")
    a.batch_sizes = sorted({int(x) for x in a.batch_sizes.split(",") if x.strip()}, reverse=True)
    a.steps = a.steps if a.steps is not None else (3 if a.tiny else 20)
    a.warmup = a.warmup if a.warmup is not None else (1 if a.tiny else 5)
    return a


def approx_flops(model, cfg, batch: int, li: int, lt: int) -> float:
    """6 * params * tokens per side + attention matmuls (fwd + bwd), as in hf_byt5_bench."""
    n_enc = sum(p.numel() for p in model.enc.parameters()) + sum(
        p.numel() for p in model.to_stats.parameters()
    )
    n_dec = sum(p.numel() for p in model.dec.parameters()) + model.lm_head.weight.numel()
    inner = cfg.n_heads * cfg.d_kv
    dense = 6.0 * (n_enc * li + n_dec * lt)
    attn = (
        12.0 * inner * (cfg.n_enc_layers * li * li + cfg.n_dec_layers * (lt * lt + lt * cfg.n_mem))
    )
    return batch * (dense + attn)


def run_eoflow(a: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F

    from eoflow.vae.model import ByteVAE, kl_per_dim, model_config
    from eoflow.vae.tokenizer import EOS_ID, OFFSET, TASK_SPANS_ID

    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    if a.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but torch.cuda.is_available() is False")
    dev = torch.device(a.device)
    on_cuda = dev.type == "cuda"
    if on_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    name = (
        torch.cuda.get_device_name(dev)
        if on_cuda
        else (platform.processor() or platform.machine()) + " (CPU)"
    )
    over = {k: v for k, v in (("latent_dim", a.latent_dim), ("n_mem", a.n_mem)) if v}
    cfg = model_config("tiny", **{**TINY, **over}) if a.tiny else model_config("byt5-small", **over)
    model = ByteVAE(cfg).to(dev).train()
    n_params = model.n_params()
    log(
        f"{'tiny' if a.tiny else 'byt5-small'}: {n_params:,} params on {name}; dtype={a.dtype} compile={a.compile}"
    )
    fwd = torch.compile(model) if a.compile else model
    li, lt = a.input_len, a.target_len
    gen = torch.Generator(device=dev).manual_seed(a.seed)
    use_autocast = a.dtype == "bf16"

    def make_batch(b: int):
        x = torch.randint(OFFSET, OFFSET + 256, (b, li), device=dev, generator=gen)
        y = torch.randint(OFFSET, OFFSET + 256, (b, lt), device=dev, generator=gen)
        x[:, -1] = EOS_ID
        y[:, -1] = EOS_ID
        dec = torch.cat(
            [torch.full((b, 1), TASK_SPANS_ID, device=dev, dtype=y.dtype), y[:, :-1]], 1
        )
        return x, dec, y

    def train_step(opt, batch):
        x, dec, y = batch
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_autocast):
            out = fwd(x, dec, padded=False)  # fixed-length batches: flash-eligible SDPA
            ce = F.cross_entropy(out["logits"].float().flatten(0, 1), y.flatten())
            kl = torch.clamp(kl_per_dim(out["mu"], out["logvar"]), min=0.25).sum()
            loss = ce + 0.1 * kl / lt
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    def new_opt():
        kw = dict(lr=1e-4, betas=(0.9, 0.95), weight_decay=0.0)
        if on_cuda:
            kw["fused"] = True
        return torch.optim.AdamW(model.parameters(), **kw)

    def sync():
        if on_cuda:
            torch.cuda.synchronize(dev)

    oom = tuple(
        t
        for t in (
            getattr(torch, "OutOfMemoryError", None),
            getattr(torch.cuda, "OutOfMemoryError", None),
        )
        if t
    )
    tried, chosen, opt = [], None, None
    for b in a.batch_sizes:
        opt = new_opt()
        try:
            t0 = time.perf_counter()
            float(train_step(opt, make_batch(b)))
            sync()
            tried.append(dict(batch=b, ok=True, probe_s=round(time.perf_counter() - t0, 3)))
            chosen = b
            break
        except oom as e:  # pragma: no cover - GPU only
            tried.append(dict(batch=b, ok=False, error=type(e).__name__))
        except RuntimeError as e:
            if "out of memory" not in str(e).lower():
                raise
            tried.append(dict(batch=b, ok=False, error="RuntimeError(out of memory)"))
        log(f"batch {b}: out of memory, trying a smaller one")
        model.zero_grad(set_to_none=True)
        opt = None
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()
    if chosen is None:
        return dict(error="no candidate batch size fits", tried=tried)
    batches = [make_batch(chosen) for _ in range(2)]
    for i in range(a.warmup):
        train_step(opt, batches[i % 2])
    sync()
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    times, losses = [], []
    for i in range(a.steps):
        t0 = time.perf_counter()
        losses.append(train_step(opt, batches[i % 2]))
        sync()
        times.append(time.perf_counter() - t0)
    losses = [float(v) for v in losses]
    step_s = statistics.fmean(times)
    tokens = chosen * (li + lt)
    tflops = approx_flops(model, cfg, chosen, li, lt) / step_s / 1e12
    if on_cuda:
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
        kind = "cuda_max_memory_allocated"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        kind = "host_peak_rss"
    return dict(
        impl="eoflow.vae.ByteVAE (SDPA + RoPE, VAE bottleneck)",
        config="tiny" if a.tiny else "byt5-small",
        device=dev.type,
        device_name=name,
        torch=torch.__version__,
        params=n_params,
        dtype="bf16-autocast" if use_autocast else "fp32",
        compiled=a.compile,
        input_len=li,
        target_len=lt,
        batch=chosen,
        tried=tried,
        warmup_steps=a.warmup,
        timed_steps=a.steps,
        step_time_s=round(step_s, 5),
        step_time_median_s=round(statistics.median(times), 5),
        tokens_per_step=tokens,
        tokens_per_s=round(tokens / step_s, 1),
        samples_per_s=round(chosen / step_s, 3),
        approx_train_tflops_per_s=round(tflops, 3),
        approx_mfu=round(tflops / a.peak_tflops, 4) if a.peak_tflops else None,
        peak_mem_mib=round(peak, 1),
        peak_mem_kind=kind,
        loss_first=round(losses[0], 4),
        loss_last=round(losses[-1], 4),
        loss_finite=all(math.isfinite(v) for v in losses),
    )


def run_hf(a: argparse.Namespace) -> dict:
    """Run the HF baseline script in a subprocess with matching settings; parse its JSON line."""
    if a.no_hf:
        return {"skipped": "--no-hf"}
    if importlib.util.find_spec("transformers") is None:
        return {"skipped": "transformers is not installed (pip install transformers==5.24.0)"}
    path = a.hf_bench or DEFAULT_HF_BENCH
    if not Path(path).is_file():
        return {"skipped": f"{path} not found (pass --hf-bench PATH)"}
    cmd = [sys.executable, str(path), "--device", a.device, "--input-len", str(a.input_len),
           "--target-len", str(a.target_len), "--dtype", a.dtype, "--steps", str(a.steps),
           "--warmup", str(a.warmup), "--batch-sizes", ",".join(map(str, a.batch_sizes)),
           "--seed", str(a.seed)]  # fmt: skip
    if a.tiny:
        cmd.append("--tiny")
    if a.compile:
        cmd.append("--compile")
    if a.peak_tflops:
        cmd += ["--peak-tflops", str(a.peak_tflops)]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    log("running HF baseline: " + " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    sys.stderr.write(proc.stderr[-4000:])
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("{")]
    if not lines:
        return {"error": f"no JSON from {path} (rc {proc.returncode})"}
    res = json.loads(lines[-1])
    res["rc"] = proc.returncode
    return res


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    t0 = time.perf_counter()
    result: dict = {"bench": "eoflow_vae_gpu_throughput"}
    try:
        result["eoflow"] = run_eoflow(a)
    except Exception as e:  # keep the one-JSON-line contract
        import traceback

        traceback.print_exc(file=sys.stderr)
        result["eoflow"] = {"error": f"{type(e).__name__}: {e}"}
    # free the GPU before the baseline runs in its own process
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass
    result["hf"] = run_hf(a)
    e, h = result["eoflow"], result["hf"]
    if "tokens_per_s" in e and "tokens_per_s" in h:
        result["speedup_vs_hf"] = round(e["tokens_per_s"] / h["tokens_per_s"], 3)
    result["wall_s"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(result), flush=True)
    return 0 if "tokens_per_s" in e else 1


if __name__ == "__main__":
    raise SystemExit(main())
