#!/usr/bin/env python3
"""Measure the peak GPU memory of one steady Hugging Face training step and hold it against
`remat plan --profile hf-eager|sdpa`.

The check of the CLI's default profiles against PyTorch itself (issue 13, part 2, check 3):

* models built from config with random weights, nothing downloaded: GPT-2 124M (the `gpt2`
  preset) and a ~1B Llama (the `llama-1b` preset), each with attn_implementation "eager"
  and "sdpa", without checkpointing and with
  gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False});
* fp32 weights under torch.autocast("cuda", dtype=torch.bfloat16), torch.optim.AdamW
  (PyTorch's default implementation: foreach on CUDA), zero_grad(set_to_none=True);
* a first step creates AdamW's state; then reset_peak_memory_stats() and one measured step:
  torch.cuda.max_memory_allocated() minus what was allocated when the case started;
* remat's side: the same config, written as a Hugging Face config.json, through
  `remat plan --model CONFIG --profile hf-eager|sdpa --strategy none|full --precision
  bf16-mixed --sharding none --world-size 1 --json`; it compares `allocator_peak_bytes`
  (the peak without the reserve: context, cuBLAS workspace, fragmentation) with the measured
  peak. HF's gradient checkpointing wraps every decoder layer, which is remat's `full`.

Usage (on the GPU machine, with the image's python3: torch 2.x and transformers):

    python3 tools/pytorch/measure_hf_step.py --remat gpu-bundle/bin/remat \\
        --json out/hf_step.json --markdown out/hf_step.md

Without a GPU or without transformers (this project's CI machines: Debian's torch 1.13):

    /usr/bin/python3 tools/pytorch/measure_hf_step.py --remat build/bin/remat --dry-run
        remat's side only: the config files, the parameter counts against the presets, every
        `remat plan` call and its JSON fields; nothing is measured.
    /usr/bin/python3 tools/pytorch/measure_hf_step.py --remat build/bin/remat --self-test
        also runs the training-step harness (autocast, AdamW, checkpointing with
        use_reentrant=False, the step accounting) on the CPU with a small stand-in model,
        since the Hugging Face classes are not there; no memory figures (CPU).

transformers is imported only when a Hugging Face model is built. The JSON is rewritten after
every case, so a run cut short keeps the cases it finished.
"""

import argparse
import gc
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

# The two models, as Hugging Face config.json contents (the keys remat's HF loader reads,
# planner/config/model.cpp). They equal the remat presets `gpt2` and `llama-1b`; the dry run checks
# that `remat plan` counts the preset's parameters for each file.
MODELS = {
    "gpt2": {
        "preset": "gpt2",
        "params": 124439808,
        "micro_batch": 8,
        "seq": 1024,
        "config": {
            "_name_or_path": "gpt2-124m-random",
            "model_type": "gpt2",
            "architectures": ["GPT2LMHeadModel"],
            "vocab_size": 50257,
            "n_positions": 1024,
            "n_embd": 768,
            "n_layer": 12,
            "n_head": 12,
            "n_inner": None,
            "activation_function": "gelu_new",
            "resid_pdrop": 0.1,
            "embd_pdrop": 0.1,
            "attn_pdrop": 0.1,
            "layer_norm_epsilon": 1e-5,
            "initializer_range": 0.02,
            "tie_word_embeddings": True,
            "use_cache": False,
        },
    },
    "llama-1b": {
        "preset": "llama-1b",
        "params": 1032931328,
        "micro_batch": 4,
        "seq": 1024,
        "config": {
            "_name_or_path": "llama-1b-random",
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "vocab_size": 32000,
            "hidden_size": 2048,
            "intermediate_size": 5632,
            "num_hidden_layers": 20,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "max_position_embeddings": 4096,
            "hidden_act": "silu",
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "mlp_bias": False,
            "tie_word_embeddings": False,
            "initializer_range": 0.02,
            "use_cache": False,
        },
    },
}

ATTENTION = {"eager": "hf-eager", "sdpa": "sdpa"}  # attn_implementation -> remat profile
CHECKPOINTING = {False: "none", True: "full"}  # gradient_checkpointing_enable -> remat strategy
# AdamW as remat models it (docs/runtime.md: lr 1e-3, betas 0.9/0.95, weight decay 0.1, eps 1e-8).
ADAMW = {"lr": 1e-3, "betas": (0.9, 0.95), "weight_decay": 0.1, "eps": 1e-8}

GPU_PRESETS = [("H200", "h200-141gb"), ("H100", "h100-80gb"), ("A100-SXM4-40GB", "a100-40gb"),
               ("A100", "a100-80gb"), ("L4", "l4-24gb"), ("4090", "rtx4090-24gb")]


def log(msg):
    print(f"[measure_hf_step {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def gpu_preset(device_name):
    for needle, preset in GPU_PRESETS:
        if needle in device_name:
            return preset
    return "h100-80gb"


# --------------------------------------------------------------------------------------------
# remat's side
# --------------------------------------------------------------------------------------------


def remat_plan(remat, config_path, profile, strategy, micro_batch, seq, gpu, gpu_memory=None):
    cmd = [remat, "plan", "--model", config_path, "--profile", profile, "--strategy", strategy,
           "--micro-batch", str(micro_batch), "--seq", str(seq), "--precision", "bf16-mixed",
           "--sharding", "none", "--world-size", "1", "--optimizer", "adamw", "--gpu", gpu, "--json"]
    if gpu_memory:
        cmd += ["--gpu-memory", gpu_memory]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.strip()}")
    doc = json.loads(p.stdout)
    for key in ("allocator_peak_bytes", "peak_bytes", "breakdown", "params", "step_time_s"):
        if key not in doc:
            raise RuntimeError(f"remat plan --json has no '{key}' (fields: {sorted(doc)})")
    return {
        "command": " ".join(cmd),
        "allocator_peak_bytes": doc["allocator_peak_bytes"],
        "peak_bytes": doc["peak_bytes"],
        "peak_action": doc.get("peak_action"),
        "peak_op": doc.get("peak_op"),
        "breakdown": doc["breakdown"],
        "params": doc["params"],
        "step_time_s": doc["step_time_s"],
    }


def write_config(directory, name, config):
    path = os.path.join(directory, f"{name}.config.json")
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    return path


# --------------------------------------------------------------------------------------------
# PyTorch's side
# --------------------------------------------------------------------------------------------


def build_hf_model(torch, config, attn_implementation, device):
    """A Hugging Face causal LM from `config` (random weights, fp32) on `device`."""
    import transformers  # only here: the GPU image has it, Debian's python does not

    cls = {"gpt2": transformers.GPT2Config, "llama": transformers.LlamaConfig}[config["model_type"]]
    kwargs = {k: v for k, v in config.items() if k not in ("model_type", "_name_or_path", "architectures")}
    cfg = cls(**kwargs)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation=attn_implementation)
    model = model.to(device=device, dtype=torch.float32)
    return model, cfg


class StandIn:
    """--self-test: a small model with the interface the harness uses (forward(input_ids,
    labels) -> .loss, gradient_checkpointing_enable(gradient_checkpointing_kwargs=...),
    num_parameters()), so the harness runs where transformers is not installed."""

    @staticmethod
    def build(torch, config, attn_implementation, device):
        nn = torch.nn
        import torch.utils.checkpoint as checkpoint

        V, H, L = 97, 32, 3

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.norm = nn.LayerNorm(H)
                self.fc = nn.Linear(H, 4 * H)
                self.proj = nn.Linear(4 * H, H)

            def forward(self, x):
                return x + self.proj(torch.nn.functional.gelu(self.fc(self.norm(x))))

        class Model(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = nn.Embedding(V, H)
                self.blocks = nn.ModuleList(Block() for _ in range(L))
                self.head = nn.Linear(H, V, bias=False)
                self.ckpt_kwargs = None

            def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
                self.ckpt_kwargs = dict(gradient_checkpointing_kwargs or {})

            def num_parameters(self):
                return sum(p.numel() for p in self.parameters())

            def forward(self, input_ids, labels):
                x = self.embed(input_ids % V)
                for b in self.blocks:
                    x = checkpoint.checkpoint(b, x, **self.ckpt_kwargs) if self.ckpt_kwargs is not None else b(x)
                logits = self.head(x).float()
                loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V),
                                                         (labels[:, 1:] % V).reshape(-1))
                return type("Out", (), {"loss": loss})()

        return Model().to(device), None


def measure_case(torch, build, config, attn_implementation, checkpointing, micro_batch, seq, device,
                 timed_steps):
    """One case: build, a first step (AdamW's state), then the measured steady step."""
    cuda = device == "cuda"
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.synchronize()
    start_bytes = torch.cuda.memory_allocated() if cuda else None
    torch.manual_seed(1234)
    model, _ = build(torch, config, attn_implementation, device)
    model.train()
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    optimizer = torch.optim.AdamW(model.parameters(), **ADAMW)
    vocab = config.get("vocab_size", 97)
    g = torch.Generator(device=device).manual_seed(7) if cuda else torch.Generator().manual_seed(7)
    ids = torch.randint(0, vocab, (micro_batch, seq), device=device, generator=g)

    def step():
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return out.loss.detach()

    loss0 = float(step())  # creates AdamW's exp_avg and exp_avg_sq
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() if cuda else None
    t0 = time.perf_counter()
    loss1 = float(step())
    if cuda:
        torch.cuda.synchronize()
    measured_step_s = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if cuda else None
    reserved = torch.cuda.max_memory_reserved() if cuda else None
    times = []
    for _ in range(timed_steps):
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    n_params = sum(p.numel() for p in model.parameters())
    foreach = optimizer.defaults.get("foreach")
    model = optimizer = ids = None  # frees them (the step closure holds the cells)
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return {
        "hf_params": n_params,
        "adamw_foreach": foreach,
        "losses": [loss0, loss1],
        "allocated_at_case_start_bytes": start_bytes,
        "allocated_before_step_bytes": None if before is None else before - start_bytes,
        "max_allocated_bytes": None if peak is None else peak - start_bytes,
        "max_reserved_bytes": reserved,
        "measured_step_s": measured_step_s,
        "step_times_s": times,
        "step_time_s": (sorted(times)[len(times) // 2] if times else measured_step_s),
    }


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def gib(b):
    return "—" if b is None else f"{b / 2**30:.3f} GiB"


def markdown(doc):
    lines = [
        "# Hugging Face training step: measured vs `remat plan`",
        "",
        f"torch {doc['torch_version']}, transformers {doc['transformers_version']}, "
        f"{doc['device_name']}, remat `--gpu {doc['gpu_preset']}`. "
        "bf16 autocast over fp32 weights, AdamW, one steady step (after the step that creates "
        "AdamW's state). Measured: `torch.cuda.max_memory_allocated()` over that step. "
        "Predicted: `allocator_peak_bytes` (no reserve). Error: (measured − predicted) / predicted.",
        "",
        "| model | B | S | attention | checkpointing | remat | measured | predicted | error | states before step | step time |",
        "| --- | ---: | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in doc["cases"]:
        m, p = c.get("measured") or {}, c.get("predicted") or {}
        err = c.get("relative_error")
        err_text = "—" if err is None else f"{100 * err:+.2f}%"
        step = m.get("step_time_s")
        step_text = f"{1000 * step:.1f} ms" if step else "—"
        row = (f"| {c['model']} | {c['micro_batch']} | {c['seq']} | {c['attn_implementation']} | "
               f"{'on' if c['gradient_checkpointing'] else 'off'} | {c['remat_profile']} {c['remat_strategy']} | "
               f"{gib(m.get('max_allocated_bytes'))} | {gib(p.get('allocator_peak_bytes'))} | {err_text} | "
               f"{gib(m.get('allocated_before_step_bytes'))} | {step_text} |")
        if c.get("error"):
            row += f" error: {c['error']}"
        lines.append(row)
    lines.append("")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--remat", required=True, help="the remat binary")
    ap.add_argument("--models", default="gpt2,llama-1b", help=f"comma-separated, of {','.join(MODELS)}")
    ap.add_argument("--attention", default="eager,sdpa", help="attn_implementation values: eager,sdpa")
    ap.add_argument("--checkpointing", default="off,on", help="off,on: gradient_checkpointing_enable or not")
    ap.add_argument("--micro-batch", type=int, help="override every model's micro-batch")
    ap.add_argument("--seq", type=int, help="override every model's sequence length")
    ap.add_argument("--device", default=None, help="cuda (default when available) | cpu")
    ap.add_argument("--gpu", help="remat GPU preset (default: from the device name; h100-80gb otherwise)")
    ap.add_argument("--gpu-memory", help="remat --gpu-memory, with a unit, e.g. 80GiB (default: the device's own)")
    ap.add_argument("--timed-steps", type=int, default=3, help="extra steps timed after the measured one")
    ap.add_argument("--json", dest="json_out", help="write the JSON document here (default: stdout)")
    ap.add_argument("--markdown", help="also write a markdown table here")
    ap.add_argument("--config-dir", help="where the config.json files go (default: a temporary directory)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="remat's side only; no torch model is built")
    mode.add_argument("--self-test", action="store_true",
                      help="remat's side, and the harness on a small stand-in model (no transformers needed)")
    a = ap.parse_args(argv)

    def items(text, allowed, option):
        out = [x for x in text.split(",")]
        for x in out:
            if x not in allowed:
                ap.error(f"{option} {x!r}: use a comma-separated list of {', '.join(map(str, allowed))}")
        return out

    models = items(a.models, list(MODELS), "--models")
    attns = items(a.attention, list(ATTENTION), "--attention")
    ckpts = [x == "on" for x in items(a.checkpointing, ["off", "on"], "--checkpointing")]
    for name, v in (("--micro-batch", a.micro_batch), ("--seq", a.seq)):
        if v is not None and v <= 0:
            ap.error(f"{name} {v}: must be a positive integer")
    if a.timed_steps < 0:
        ap.error("--timed-steps must be >= 0")
    if not (os.path.isfile(a.remat) and os.access(a.remat, os.X_OK)):
        ap.error(f"--remat {a.remat!r}: not an executable file")

    torch = None
    if not a.dry_run:
        import torch  # noqa: F811  (the dry run works without torch)
    device = a.device or ("cuda" if torch is not None and torch.cuda.is_available() else "cpu")
    if device not in ("cuda", "cpu"):
        ap.error(f"--device {device!r}: use cuda or cpu")
    if device == "cuda" and (torch is None or not torch.cuda.is_available()):
        ap.error("--device cuda: no GPU visible to torch")
    if device == "cpu" and not (a.dry_run or a.self_test):
        ap.error("measuring needs a GPU (torch.cuda.max_memory_allocated); on the CPU use --dry-run or --self-test")

    transformers_version = None
    if torch is not None and not a.self_test:
        import transformers
        transformers_version = transformers.__version__
    device_name = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu"
    preset = a.gpu or gpu_preset(device_name)
    gpu_memory = a.gpu_memory
    if gpu_memory is None and device == "cuda":
        gpu_memory = f"{torch.cuda.get_device_properties(0).total_memory}B"

    config_dir = a.config_dir or tempfile.mkdtemp(prefix="remat-hf-configs-")
    os.makedirs(config_dir, exist_ok=True)
    try:
        return run(a, models, attns, ckpts, torch, device, device_name, preset, gpu_memory, transformers_version,
                   config_dir)
    finally:
        if not a.config_dir:
            shutil.rmtree(config_dir, ignore_errors=True)


def run(a, models, attns, ckpts, torch, device, device_name, preset, gpu_memory, transformers_version, config_dir):
    doc = {
        "generated_by": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "mode": "dry-run" if a.dry_run else "self-test" if a.self_test else "measure",
        "python_version": platform.python_version(),
        "torch_version": torch.__version__ if torch is not None else None,
        "torch_cuda_version": getattr(getattr(torch, "version", None), "cuda", None) if torch is not None else None,
        "transformers_version": transformers_version,
        "device": device,
        "device_name": device_name,
        "gpu_preset": preset,
        "gpu_memory": gpu_memory,
        "remat": a.remat,
        "autocast": "torch.autocast(device_type, dtype=torch.bfloat16) over fp32 weights",
        "optimizer": {"name": "torch.optim.AdamW", **{k: list(v) if isinstance(v, tuple) else v for k, v in ADAMW.items()}},
        "gradient_checkpointing": "model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={'use_reentrant': False})",
        "measured": "torch.cuda.max_memory_allocated() over the second step, after reset_peak_memory_stats(), minus "
                    "memory_allocated() at the case's start",
        "predicted": "remat plan --json: allocator_peak_bytes (peak_bytes minus the reserve)",
        "cases": [],
    }

    def flush():
        text = json.dumps(doc, indent=2) + "\n"
        if a.json_out:
            tmp = a.json_out + ".tmp"
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, a.json_out)
        if a.markdown:
            with open(a.markdown, "w") as f:
                f.write(markdown(doc))
        return text

    failures = 0
    for name in models:
        spec = MODELS[name]
        B = a.micro_batch or spec["micro_batch"]
        S = a.seq or spec["seq"]
        config_path = write_config(config_dir, name, spec["config"])
        for attn in attns:
            for ckpt in ckpts:
                case = {"model": name, "micro_batch": B, "seq": S, "attn_implementation": attn,
                        "gradient_checkpointing": ckpt, "remat_profile": ATTENTION[attn],
                        "remat_strategy": CHECKPOINTING[ckpt], "hf_config": spec["config"],
                        "measured": None, "predicted": None, "relative_error": None, "error": None}
                doc["cases"].append(case)
                log(f"{name} B={B} S={S} {attn} checkpointing={'on' if ckpt else 'off'}")
                try:
                    case["predicted"] = remat_plan(a.remat, config_path, ATTENTION[attn], CHECKPOINTING[ckpt], B, S,
                                                   preset, gpu_memory)
                    if case["predicted"]["params"] != spec["params"]:
                        raise RuntimeError(f"remat counts {case['predicted']['params']} parameters in {config_path}, "
                                           f"the preset {spec['preset']} has {spec['params']}")
                    if not a.dry_run:
                        build = StandIn.build if a.self_test else build_hf_model
                        case["measured"] = measure_case(torch, build, spec["config"], attn, ckpt, B, S, device,
                                                        a.timed_steps)
                        m = case["measured"]
                        if not a.self_test and m["hf_params"] != spec["params"]:
                            raise RuntimeError(f"the Hugging Face model has {m['hf_params']} parameters, "
                                               f"remat's preset {spec['params']}")
                        if not all(math.isfinite(x) for x in m["losses"]):
                            raise RuntimeError(f"non-finite loss {m['losses']}")
                        if m["max_allocated_bytes"] is not None:
                            p = case["predicted"]["allocator_peak_bytes"]
                            case["relative_error"] = (m["max_allocated_bytes"] - p) / p
                except Exception as e:  # one case's failure (an OOM, say) is recorded, the others run
                    failures += 1
                    case["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:500]
                    log(f"  error: {case['error']}")
                    if torch is not None and device == "cuda":
                        gc.collect()
                        torch.cuda.empty_cache()
                flush()
    text = flush()
    if not a.json_out:
        sys.stdout.write(text)
    log(f"{len(doc['cases'])} cases, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
