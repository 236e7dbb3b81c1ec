#!/usr/bin/env python3
"""Measure the live tensor bytes of a real PyTorch training step, exactly.

    /usr/bin/python3 tests/torch/measure_step.py CONFIG.json --micro-batch B --seq S
        [--precision fp32|bf16-mixed] [--optimizer adamw|sgd] [--optimizer-impl foreach|for-loop]
        [--plan PLAN.json] [--train full|lora --lora-rank R --lora-alpha A --lora-dropout P
        --lora-targets q_proj,v_proj --base-dtype fp32|bf16] [--memory-snapshot FILE.pickle]

builds the model of CONFIG.json (hf_models.py: model_type gpt2, llama, mistral, gpt_neox, qwen2,
gemma, gemma2, phi3, mixtral, falcon; its blocks are transformer.h, model.layers or gpt_neox.layers
and its final norm ln_f, norm or final_layer_norm), applies the plan of `remat plan --json`
through the bridge (python/remat_torch: what a user's training code gets), runs one training
step to create the optimizer state, then measures a second, steady one: forward, the loss
(ForCausalLMLoss), backward, optimizer step, zero_grad(set_to_none=True). It prints one JSON
document: the peak of the whole step, of forward + backward, and the live bytes at each stage
boundary of forward and backward, in the order they happen, each with the high-water mark
since the boundary before it.

How bytes are counted: c10 allocates every CPU storage through posix_memalign. alloc_probe.c,
preloaded, counts the bytes of every block it hands out until it is freed (see its header).
The script compiles the probe with `cc` on first use and re-executes itself with LD_PRELOAD.
The counts are the tensors' storage bytes, exactly; Python objects (malloc) are not in them.

Boundaries. Stages are numbered as remat numbers them: 0 the embedding, 1..L the blocks, L+1
the final norm, L+2 the head with the loss. A forward boundary F(i) is read when stage i's
forward is done and the next one starts (a block's input is held by the model's loop until the
block's call returns); a backward boundary B(i) when the
gradient of stage i's input is complete (a tensor hook on that input, which autograd's engine
runs before the node that consumes the gradient), and B(0) when backward() returns.
Recomputations in backward read no boundary. Every boundary is read, a checkpointed segment's
interior ones too: remat_torch runs each of a segment's blocks at its own call.

--memory-snapshot writes the measured step's every tensor allocation and free in PyTorch's memory
snapshot format (as `remat plan --memory-snapshot` writes the prediction; docs/report.md): the
probe keeps each event of a counted block with the boundary the step is heading for, and the
blocks live when the step starts are recorded first. Open both in https://pytorch.org/memory_viz.

Mixtral: routing depends on the data and the (random) router weights, so the document also has
"expert_tokens", per layer the tokens each expert received in the measured step's forward (a
recomputation routes the same tokens again).
"""

import argparse
import ctypes
import hashlib
import json
import os
import pickle
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "python"))

PROBE_SOURCE = os.path.join(HERE, "alloc_probe.c")
TENSORS, HOST, OTHER, ALL = 0, 1, 2, -1


def probe_path():
    src = open(PROBE_SOURCE, "rb").read()
    digest = hashlib.sha256(src).hexdigest()[:16]
    out = os.path.join(tempfile.gettempdir(), f"remat-alloc-probe-{digest}.so")
    if not os.path.exists(out):
        tmp = out + f".{os.getpid()}"
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", tmp, PROBE_SOURCE, "-ldl", "-lpthread"], check=True)
        os.replace(tmp, out)
    return out


def load_probe():
    """The preloaded probe, or None when this process was started without it."""
    try:
        lib = ctypes.CDLL(None)
        lib.remat_probe_active
    except AttributeError:
        return None
    for name in ("remat_probe_live", "remat_probe_peak"):
        getattr(lib, name).restype = ctypes.c_uint64
        getattr(lib, name).argtypes = [ctypes.c_int]
    lib.remat_probe_host.argtypes = [ctypes.c_int]
    lib.remat_probe_trace.argtypes = [ctypes.c_int]
    lib.remat_probe_mark.argtypes = [ctypes.c_int]
    lib.remat_probe_events.restype = ctypes.c_uint64
    lib.remat_probe_event.argtypes = [ctypes.c_uint64, ctypes.POINTER(ctypes.c_int64)]
    return lib


def memory_snapshot(probe, boundaries, torch_version):
    """The traced step as torch.cuda.memory._dump_snapshot writes a snapshot: device_traces[0] with
    alloc / free_requested / free_completed per tensor block (class TENSORS: what the sweep
    compares), each framed with the boundary the step was heading for; no segments (the
    viewer's Active Memory Timeline needs none). An entry of category `unknown` comes first: the
    viewer requires one once any entry has a category."""
    n = probe.remat_probe_events()
    if n == 2**64 - 1:
        sys.exit("measure_step.py: --memory-snapshot: the probe ran out of memory for its trace")
    where = f"measured: torch {torch_version}, CPU"
    trace = [{"action": "snapshot", "addr": 0, "size": 0, "stream": 0, "frames": [], "category": "unknown"}]
    out = (ctypes.c_int64 * 5)()
    for i in range(n):
        probe.remat_probe_event(i, out)
        addr, size, alloc, cls, mark = out[0] & (2**64 - 1), out[1], out[2], out[3], out[4]
        if cls != TENSORS:
            continue
        if mark < 0:
            label, category = "live at the step's start", "live at the step's start"
        else:
            label = boundaries[mark]["action"] if mark < len(boundaries) else "optimizer step, zero_grad"
            category = "allocated in the step"
        entry = {"addr": addr, "size": size, "stream": 0, "category": category,
                 "frames": [{"name": label, "filename": where, "line": max(mark, 0)}]}
        if alloc:
            trace.append({"action": "alloc", **entry})
        else:
            trace.append({"action": "free_requested", **entry})
            trace.append({"action": "free_completed", **entry})
    return {"segments": [], "device_traces": [trace], "allocator_settings": {}}


def reexec_with_probe():
    so = probe_path()
    env = dict(os.environ)
    env["LD_PRELOAD"] = so + (":" + env["LD_PRELOAD"] if env.get("LD_PRELOAD") else "")
    env["REMAT_PROBE_CHILD"] = "1"
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


class Recorder:
    """Reads the probe at stage boundaries; stages are numbered as remat numbers them."""

    def __init__(self, probe, n_blocks):
        self.probe = probe
        # every block runs at its own call, inside a checkpointed segment too (remat_torch spreads
        # the segment's checkpoint over its blocks), so every boundary is read
        self.L = n_blocks
        self.events = []
        self.phase = "idle"  # idle | forward | backward
        self.fwd_bwd_peak = 0

    def read(self, kind, stage):
        star = self.phase == "backward" and kind == "F"
        self.events.append({"action": f"{kind}({stage}){'*' if star else ''}",
                            "live_bytes": self.probe.remat_probe_live(TENSORS),
                            "peak_bytes": self.probe.remat_probe_peak(TENSORS),
                            "host_bytes": self.probe.remat_probe_live(HOST)})
        self.fwd_bwd_peak = max(self.fwd_bwd_peak, self.events[-1]["peak_bytes"])
        self.probe.remat_probe_reset_peak()  # each event's peak is the high-water mark since the last
        self.probe.remat_probe_mark(len(self.events))  # a traced event belongs to the next boundary

    def grad_hook(self, stage):
        def hook(grad):
            if self.phase == "backward":
                self.read("B", stage)
        return hook

    def attach(self, model, blocks, final_norm):
        import torch

        # F(i) is read when the next stage starts: until the block's call returns, the model's loop
        # still holds the block's input (a segment's interior blocks keep nothing else of it)
        def block_pre(i):
            def pre(module, args):
                x = args[0]
                if self.phase == "forward":
                    self.read("F", i)  # i == 0: the embedding's forward is done; else block i's
                if torch.is_grad_enabled() and x.requires_grad and self.phase == "forward":
                    x.register_hook(self.grad_hook(i + 1))
            return pre

        for i, b in enumerate(blocks):
            b.register_forward_pre_hook(block_pre(i))

        def norm_pre(module, args):
            if self.phase == "forward":
                self.read("F", self.L)
            if torch.is_grad_enabled() and args[0].requires_grad and self.phase == "forward":
                args[0].register_hook(self.grad_hook(self.L + 1))

        def norm_post(module, args, out):
            if self.phase == "forward":
                self.read("F", self.L + 1)
                if out.requires_grad:  # not under no_grad (--train frozen)
                    out.register_hook(self.grad_hook(self.L + 2))

        final_norm.register_forward_pre_hook(norm_pre)
        final_norm.register_forward_hook(norm_post)


def measure(args, probe):
    import torch

    import hf_models
    import hf_modules
    import remat_torch

    torch.manual_seed(1234)
    torch.set_num_threads(args.threads)
    with open(args.config) as f:
        config = json.load(f)
    model = hf_models.build_model(config)
    model.train()
    reference = None
    if args.recipe == "dpo" and args.ref_logprobs == "model" and args.train == "full":
        # the seed's trainer: a second copy of the model, frozen, in eval mode
        import copy
        reference = copy.deepcopy(model)
        reference.eval()
        for p in reference.parameters():
            p.requires_grad_(False)
    if args.train == "frozen":
        # a forward under no_grad: evaluation, or precomputing DPO's reference log-probabilities
        if args.base_dtype == "bf16":
            model.to(torch.bfloat16)
        for p in model.parameters():
            p.requires_grad_(False)
    if args.train == "lora":
        # PEFT's recipe: the base in its dtype, get_peft_model (frozen base, fp32 adapters), and
        # enable_input_require_grads (what Trainer calls with gradient checkpointing on)
        if args.base_dtype == "bf16":
            model.to(torch.bfloat16)
        targets = args.lora_targets.split(",")
        if not hf_modules.apply_lora(model, remat_torch.find_blocks(model), targets, args.lora_rank,
                                     args.lora_alpha, args.lora_dropout):
            sys.exit(f"measure_step.py: --lora-targets {args.lora_targets}: no such module in the blocks")
        model.enable_input_require_grads()
    plan = None
    if args.plan:
        with open(args.plan) as f:
            plan = json.load(f)
        remat_torch.apply_plan(model, plan)
    blocks = remat_torch.find_blocks(model)
    rec = Recorder(probe, len(blocks))
    rec.attach(model, blocks, model.final_norm())

    moe_blocks = [m for m in model.modules()
                  if isinstance(m, (hf_modules.MixtralSparseMoeBlock, hf_modules.Qwen2MoeSparseMoeBlock))]

    V = model.config.vocab_size
    params = [p for p in model.parameters() if p.requires_grad]
    foreach = args.optimizer_impl == "foreach"
    if not params:
        opt = None  # --train frozen: nothing to step
    elif args.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=1e-4, foreach=foreach)
    elif args.optimizer == "adafactor":
        opt = hf_modules.Adafactor(params)
    else:
        opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9, foreach=foreach)
    g = torch.Generator().manual_seed(7)

    sequences = 2 * args.micro_batch if args.recipe == "dpo" else args.micro_batch

    def dpo_loss(input_ids):
        # trainers.py get_batch_metrics: the policy's concatenated forward, then the reference's
        # under no_grad (read no boundaries: the recorder idles), then the preference loss
        chosen, rejected = hf_modules.concatenated_forward(model, input_ids)
        phase, rec.phase = rec.phase, "idle"
        with torch.no_grad():
            if args.ref_logprobs == "precomputed":
                ref_chosen = torch.zeros_like(chosen)
                ref_rejected = torch.zeros_like(rejected)
            elif reference is not None:
                ref_chosen, ref_rejected = hf_modules.concatenated_forward(reference, input_ids)
            else:  # LoRA: the policy with its adapters disabled
                hf_modules.LoraLinear.disabled = True
                ref_chosen, ref_rejected = hf_modules.concatenated_forward(model, input_ids)
                hf_modules.LoraLinear.disabled = False
        rec.phase = phase
        return hf_modules.preference_loss(chosen, rejected, ref_chosen, ref_rejected).mean()

    def step(measured):
        input_ids = torch.randint(0, V, (sequences, args.seq), generator=g)
        labels = input_ids
        out = {}
        if measured:
            probe.remat_probe_reset_peak()
            out["start_bytes"] = probe.remat_probe_live(TENSORS)
            rec.events.clear()
            rec.fwd_bwd_peak = 0
            if args.memory_snapshot:
                probe.remat_probe_mark(0)
                probe.remat_probe_trace(1)
        rec.phase = "forward" if measured else "idle"
        ctx = (torch.autocast("cpu", dtype=torch.bfloat16) if args.precision == "bf16-mixed"
               else torch.autocast("cpu", enabled=False))
        grad = torch.enable_grad() if opt is not None else torch.no_grad()
        with ctx, grad:
            loss = dpo_loss(input_ids) if args.recipe == "dpo" else model(input_ids, labels)
            if measured:
                rec.read("F", rec.L + 2)  # inside autocast: leaving it frees its weight cache
        if measured and moe_blocks:
            # routing is data-dependent: what each layer's experts received in this step's forward
            out["expert_tokens"] = [list(m.expert_tokens) for m in moe_blocks]
        if measured:
            rec.phase = "backward"
        if opt is not None:
            loss.backward()
        del loss
        if measured:
            rec.read("B", 0)
            rec.phase = "idle"
            out["forward_backward_peak_bytes"] = rec.fwd_bwd_peak
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)
        del input_ids, labels
        if measured and args.memory_snapshot:
            probe.remat_probe_trace(0)
            snapshot = memory_snapshot(probe, rec.events, torch.__version__)
            with open(args.memory_snapshot, "wb") as f:
                pickle.dump(snapshot, f, protocol=4)  # PyTorch's viewer reads protocols 2 to 4
        if measured:
            out["optimizer_peak_bytes"] = probe.remat_probe_peak(TENSORS)
            out["step_peak_bytes"] = max(rec.fwd_bwd_peak, out["optimizer_peak_bytes"])
            out["end_bytes"] = probe.remat_probe_live(TENSORS)
            out["host_peak_bytes"] = probe.remat_probe_peak(HOST)
            out["other_peak_bytes"] = probe.remat_probe_peak(OTHER)
            out["boundaries"] = list(rec.events)
        return out

    step(False)
    result = step(True)
    result.update({
        "config": os.path.basename(args.config), "micro_batch": args.micro_batch, "seq": args.seq,
        "precision": args.precision, "optimizer": args.optimizer, "optimizer_impl": args.optimizer_impl,
        "strategy": plan.get("strategy") if plan else "none", "torch_version": torch.__version__,
        "params": sum(p.numel() for p in model.parameters()), "train": args.train, "recipe": args.recipe,
        # as PEFT's print_trainable_parameters() counts them
        "trainable_params": sum(p.numel() for p in params),
        "all_params": sum(p.numel() for p in model.parameters()),
    })
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="a Hugging Face config.json (model_type gpt2, llama, mistral, gpt_neox, qwen2, "
                    "gemma, gemma2, phi3, mixtral, falcon)")
    ap.add_argument("--micro-batch", type=int, required=True)
    ap.add_argument("--seq", type=int, required=True)
    ap.add_argument("--precision", choices=["fp32", "bf16-mixed"], default="fp32")
    ap.add_argument("--optimizer", choices=["adamw", "sgd", "adafactor"], default="adamw",
                    help="adafactor: transformers' Adafactor (hf_modules.Adafactor)")
    ap.add_argument("--optimizer-impl", choices=["foreach", "for-loop"], default="for-loop",
                    help="torch.optim's implementation (torch 1.13 on CPU defaults to for-loop)")
    ap.add_argument("--plan", help="the JSON of `remat plan --json` to apply with remat_torch.apply_plan")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--recipe", choices=["sft", "dpo"], default="sft",
                    help="dpo: --micro-batch pairs, chosen and rejected concatenated (hf_modules' DPO)")
    ap.add_argument("--ref-logprobs", choices=["model", "precomputed"], default="model")
    ap.add_argument("--train", choices=["full", "lora", "frozen"], default="full",
                    help="lora: PEFT's LoRA (hf_modules.LoraLinear) on a frozen base; frozen: the loss "
                    "under torch.no_grad(), nothing trained")
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--lora-alpha", type=float, default=16)
    ap.add_argument("--lora-dropout", type=float, default=0.0)
    ap.add_argument("--lora-targets", default="q_proj,v_proj",
                    help="module names, comma-separated (remat plan --json's question.lora.targets)")
    ap.add_argument("--base-dtype", choices=["fp32", "bf16"], default="fp32",
                    help="the frozen base's dtype (bf16: model.to(torch.bfloat16) before the adapters)")
    ap.add_argument("--memory-snapshot", metavar="FILE",
                    help="also write the measured step's allocations in PyTorch's memory snapshot format "
                    "(a pickle for https://pytorch.org/memory_viz)")
    args = ap.parse_args()
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit("measure_step.py: needs PyTorch: apt-get install python3-torch, and run it with /usr/bin/python3")
    probe = load_probe()
    if probe is None:
        if os.environ.get("REMAT_PROBE_CHILD"):
            sys.exit("measure_step.py: the allocation probe did not load (LD_PRELOAD); is `cc` a working C compiler?")
        reexec_with_probe()
    json.dump(measure(args, probe), sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
