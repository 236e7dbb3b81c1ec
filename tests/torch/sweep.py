#!/usr/bin/env python3
"""Hold remat's predictions against real PyTorch training steps.

    /usr/bin/python3 tests/torch/sweep.py [--size ci|full] [--remat build/bin/remat]
        [--json OUT.json] [--markdown OUT.md] [--tolerance 0.01] [--only SUBSTRING]

For each case: writes the model's Hugging Face config.json, asks `remat plan --json` (profile
hf-eager, --torch cpu-1.13, the case's strategy, precision and optimizer), measures the same
step with measure_step.py (the plan applied through remat_torch.apply_plan), and compares
the whole-step peak, the forward + backward peak and every stage boundary (see measure_step.py;
Mixtral cases also get the measured routing, see routing()). Relative
error = (predicted - measured) / measured. Exits 1 when any error exceeds --tolerance.
"""

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def gpt2(L, H, A, V, P=256, drop=0.0, tied=True):
    return {"model_type": "gpt2", "n_layer": L, "n_embd": H, "n_head": A, "vocab_size": V, "n_positions": P,
            "activation_function": "gelu_new", "resid_pdrop": drop, "embd_pdrop": drop, "attn_pdrop": drop,
            "tie_word_embeddings": tied}


def llama(L, H, A, KV, F, V, drop=0.0, tied=False):
    return {"model_type": "llama", "num_hidden_layers": L, "hidden_size": H, "num_attention_heads": A,
            "num_key_value_heads": KV, "intermediate_size": F, "vocab_size": V, "max_position_embeddings": 2048,
            "attention_dropout": drop, "tie_word_embeddings": tied}


def neox(L, H, A, V, drop=0.0, parallel=True, act=None):
    j = {"model_type": "gpt_neox", "num_hidden_layers": L, "hidden_size": H, "num_attention_heads": A,
         "intermediate_size": 4 * H, "vocab_size": V, "max_position_embeddings": 2048, "rotary_pct": 0.25,
         "attention_dropout": drop, "hidden_dropout": drop, "use_parallel_residual": parallel}
    if act is not None:
        j["hidden_act"] = act
    return j


def decoder(t, L, H, A, KV, F, V, tied=False, **extra):
    """A Llama-style decoder of model_type t (qwen2, gemma, gemma2, phi3, mixtral, llama)."""
    return {"model_type": t, "num_hidden_layers": L, "hidden_size": H, "num_attention_heads": A,
            "num_key_value_heads": KV, "intermediate_size": F, "vocab_size": V, "max_position_embeddings": 2048,
            "tie_word_embeddings": tied, **extra}


def falcon(L, H, A, V, **extra):
    return {"model_type": "falcon", "num_hidden_layers": L, "hidden_size": H, "num_attention_heads": A,
            "vocab_size": V, "max_position_embeddings": 2048, **extra}


# The families added after the first sweep: one case per family's distinguishing feature. In CI each
# runs at one shape with three cases (fp32 keeping everything, fp32 sqrt, bf16 autocast keeping
# everything); --size full runs them like the others.
NEW_FAMILIES = {
    # GQA, q/k/v biases, tied head
    "qwen2-gqa-tied-4k": decoder("qwen2", 4, 64, 4, 2, 176, 4096, tied=True),
    # head_dim 32 != H / A = 16, multi-query, tied (gemma's default), the sqrt(H) normalizer
    "gemma-hd32-mqa-4k": decoder("gemma", 4, 64, 4, 1, 176, 4096, tied=True, head_dim=32),
    # attention and final logit soft-capping, sliding window (32 < S) on even layers, head_dim 32
    "gemma2-softcap-4k": decoder("gemma2", 4, 64, 4, 2, 176, 4096, tied=True, head_dim=32,
                                 query_pre_attn_scalar=32, sliding_window=32),
    # fused qkv and gate_up projections
    "phi3-4k": decoder("phi3", 4, 64, 4, 4, 176, 4096),
    # resid_pdrop > 0: dropout on both residual branches
    "phi3-gqa-drop-8k": decoder("phi3", 4, 64, 4, 2, 176, 8192, resid_pdrop=0.1),
    # 4 experts, top-2 (random weights: routing is not balanced; measure_step reports the counts)
    "mixtral-4e-top2-4k": decoder("mixtral", 4, 64, 4, 2, 128, 4096, num_local_experts=4, num_experts_per_tok=2),
    # 6 routed experts of their own width, top-3 without renormalization, a shared expert
    "qwen2moe-6e-top3-4k": decoder("qwen2_moe", 4, 64, 4, 4, 176, 4096, num_experts=6, num_experts_per_tok=3,
                                   moe_intermediate_size=48, shared_expert_intermediate_size=128),
    # Falcon-7B style: multi-query, parallel attention and MLP from one layer norm, no biases
    "falcon-7b-style-4k": falcon(4, 64, 4, 4096, multi_query=True, parallel_attn=True, bias=False),
    # Falcon-40B style: new_decoder_architecture, 2 KV groups, ln_attn + ln_mlp
    "falcon-newarch-kv2-8k": falcon(4, 64, 4, 8192, new_decoder_architecture=True, num_kv_heads=2,
                                    parallel_attn=True, bias=False),
    # sequential (parallel_attn false), multi-head, biased linears, dropout on both residual adds
    "falcon-seq-bias-drop-4k": falcon(4, 64, 4, 4096, multi_query=False, parallel_attn=False, bias=True,
                                      attention_dropout=0.1, hidden_dropout=0.1, tie_word_embeddings=False),
    "neox-gelu-fast-6k": neox(4, 64, 4, 6144, act="gelu_fast"),
    # LlamaMLP stays gated whatever the activation
    "llama-gelu-4k": {**llama(4, 64, 4, 4, 176, 4096), "hidden_act": "gelu"},
}
NEW_CI = ("qwen2-gqa-tied-4k", "gemma-hd32-mqa-4k", "gemma2-softcap-4k", "phi3-gqa-drop-8k", "mixtral-4e-top2-4k",
          "qwen2moe-6e-top3-4k", "falcon-7b-style-4k", "falcon-newarch-kv2-8k", "falcon-seq-bias-drop-4k", "neox-gelu-fast-6k",
          "llama-gelu-4k")


def lora(targets=None, rank=8, dropout=0.0, base="fp32"):
    """remat's flags for PEFT's LoRA (measure_step.py gets the same, resolved, from the plan)."""
    flags = ["--train", "lora", "--lora-rank", str(rank), "--lora-dropout", str(dropout), "--base-dtype", base]
    return flags + (["--lora-targets", targets] if targets else [])


# Fine-tuning (issue 17): PEFT's LoRA on a frozen base, each family's default targets (phi3 has none in
# PEFT: all-linear), fp32 and bf16 bases, dropout on the adapters' input, checkpointing.
FINETUNE = [
    ("llama-gqa-8k", "fp32", "none", lora()),
    ("llama-gqa-8k", "bf16-mixed", "none", lora()),
    ("llama-gqa-8k", "bf16-mixed", "sqrt", lora(base="bf16")),
    ("llama-gqa-8k", "bf16-mixed", "full", lora("all-linear", rank=16, dropout=0.1, base="bf16")),
    ("llama-gqa-8k", "fp32", "every-2", lora("all-linear", dropout=0.1)),
    ("gpt2-tied-4k", "fp32", "none", lora()),
    ("gpt2-tied-4k", "bf16-mixed", "sqrt", lora("c_attn,c_proj,c_fc")),
    ("neox-6k", "bf16-mixed", "none", lora()),
    ("phi3-4k", "bf16-mixed", "none", lora("all-linear", base="bf16")),
    ("mixtral-4e-top2-4k", "fp32", "none", lora("all-linear")),
    ("falcon-7b-style-4k", "bf16-mixed", "none", lora()),
    ("gemma-hd32-mqa-4k", "bf16-mixed", "full", lora(base="bf16")),
    # DPO (the seed's trainer): B pairs concatenated, the reference after the policy under no_grad
    ("llama-gqa-8k", "fp32", "none", ["--recipe", "dpo"]),
    ("llama-gqa-8k", "bf16-mixed", "sqrt", ["--recipe", "dpo"]),
    ("gpt2-tied-4k", "fp32", "full", ["--recipe", "dpo"]),
    ("neox-6k", "bf16-mixed", "none", ["--recipe", "dpo", "--ref-logprobs", "precomputed"]),
    ("llama-gqa-8k", "bf16-mixed", "full", ["--recipe", "dpo"] + lora(base="bf16")),
    ("gemma-hd32-mqa-4k", "fp32", "none", ["--recipe", "dpo"] + lora()),
]


def finetune_cases():
    models = {**NEW_FAMILIES, "llama-gqa-8k": llama(4, 64, 4, 2, 176, 8192), "gpt2-tied-4k": gpt2(4, 64, 4, 4096),
              "neox-6k": neox(4, 64, 4, 6144)}
    out = [(name, models[name], 2, 128, prec, "adamw", "for-loop", strat, flags)
           for name, prec, strat, flags in FINETUNE]
    # transformers' Adafactor (factored second moments): full training and LoRA's adapters
    out += [("llama-gqa-8k", models["llama-gqa-8k"], 2, 128, "fp32", "adafactor", "for-loop", "none", []),
            ("gpt2-untied-8k", gpt2(4, 96, 4, 8192, tied=False), 2, 128, "bf16-mixed", "adafactor", "for-loop",
             "sqrt", []),
            # --train frozen: the loss under no_grad (evaluation, DPO's reference precomputed)
            ("llama-gqa-8k", models["llama-gqa-8k"], 4, 128, "fp32", "adamw", "for-loop", "none",
             ["--train", "frozen"]),
            ("gemma-hd32-mqa-4k", models["gemma-hd32-mqa-4k"], 4, 128, "bf16-mixed", "adamw", "for-loop", "none",
             ["--train", "frozen", "--base-dtype", "bf16"]),
            # a short step whose peak is the optimizer's: its two fp32 temporaries of the largest tensor
            ("gpt2-untied-8k", gpt2(4, 96, 4, 8192, tied=False), 1, 16, "fp32", "adafactor", "for-loop", "full", []),
            ("llama-gqa-8k", models["llama-gqa-8k"], 2, 128, "bf16-mixed", "adafactor", "for-loop", "full",
             lora("all-linear"))]
    return out


def cases(size):
    """(name, config, micro_batch, seq, precision, optimizer, impl, strategy, extra remat flags)"""
    out = finetune_cases()
    models = {
        "gpt2-tied-4k": gpt2(4, 64, 4, 4096),
        "gpt2-tied-32k-drop": gpt2(4, 64, 4, 32000, drop=0.1),
        "gpt2-untied-8k": gpt2(4, 96, 4, 8192, tied=False),
        "llama-gqa-8k": llama(4, 64, 4, 2, 176, 8192),
        "llama-tied-4k-drop": llama(4, 64, 4, 4, 176, 4096, drop=0.1, tied=True),
        "neox-6k": neox(4, 64, 4, 6144),
        "neox-serial-50k-drop": neox(3, 64, 4, 50304, drop=0.1, parallel=False),
    }
    strategies = ["none", "full", "every-2", "sqrt", "segments-2"]
    # full: every case at every shape; ci: every case at one shape, two at the small one
    shapes = [(1, 64), (4, 128)] if size == "ci" else [(1, 64), (2, 128), (8, 256)]
    for name, cfg in models.items():
        for B, S in shapes:
            every = size == "full" or (B, S) == (4, 128)
            for strat in strategies if every else ["none"]:
                out.append((name, cfg, B, S, "fp32", "adamw", "for-loop", strat, []))
            if every:
                out.append((name, cfg, B, S, "bf16-mixed", "adamw", "for-loop", "none", []))
                out.append((name, cfg, B, S, "bf16-mixed", "adamw", "for-loop", "sqrt", []))
                out.append((name, cfg, B, S, "fp32", "sgd", "for-loop", "every-3", []))
                out.append((name, cfg, B, S, "fp32", "adamw", "foreach", "full", []))
            out.append((name, cfg, B, S, "fp32", "adamw", "for-loop", "optimal", ["--memory-budget", "midway"]))
    if size == "ci":
        for name in NEW_CI:
            cfg = NEW_FAMILIES[name]
            out.append((name, cfg, 2, 128, "fp32", "adamw", "for-loop", "none", []))
            out.append((name, cfg, 2, 128, "fp32", "adamw", "for-loop", "sqrt", []))
            out.append((name, cfg, 2, 128, "bf16-mixed", "adamw", "for-loop", "none", []))
        return out
    for name, cfg in NEW_FAMILIES.items():
        for B, S in shapes:
            for strat in strategies:
                out.append((name, cfg, B, S, "fp32", "adamw", "for-loop", strat, []))
            out.append((name, cfg, B, S, "bf16-mixed", "adamw", "for-loop", "none", []))
            out.append((name, cfg, B, S, "bf16-mixed", "adamw", "for-loop", "sqrt", []))
            out.append((name, cfg, B, S, "fp32", "sgd", "for-loop", "every-3", []))
            out.append((name, cfg, B, S, "fp32", "adamw", "foreach", "full", []))
            out.append((name, cfg, B, S, "fp32", "adamw", "for-loop", "optimal", ["--memory-budget", "midway"]))
    return out


def remat_plan(remat, cfg_path, B, S, prec, opt, impl, strat, extra):
    if "midway" in extra:
        # halfway between keeping everything and full recomputation: optimal must choose (the
        # budget is that of balanced routing, whatever --moe-capacity-factor follows)
        lo = remat_plan(remat, cfg_path, B, S, prec, opt, impl, "full", [])["peak_bytes"]
        hi = remat_plan(remat, cfg_path, B, S, prec, opt, impl, "none", [])["peak_bytes"]
        extra = [f"{(lo + hi) // 2}B" if e == "midway" else e for e in extra]
    cmd = [remat, "plan", "--model", cfg_path, "--micro-batch", str(B), "--seq", str(S), "--precision", prec,
           "--optimizer", opt, "--optimizer-impl", impl, "--torch", "cpu-1.13", "--profile", "hf-eager",
           "--strategy", strat, "--json"] + extra
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"sweep.py: {' '.join(cmd)}: {done.stderr.strip()}")
    return json.loads(done.stdout)


def lora_flags(plan):
    """measure_step.py's recipe and LoRA flags from the plan's question (the targets as remat resolved
    them)."""
    q = plan["question"]
    recipe = ["--recipe", "dpo", "--ref-logprobs", q["ref_logprobs"]] if q["recipe"] == "dpo" else []
    if q["train"] == "frozen":
        return ["--train", "frozen", "--base-dtype", q["base_dtype"]]
    if q["train"] != "lora":
        return recipe
    l = q["lora"]
    return recipe + ["--train", "lora", "--lora-rank", str(l["rank"]), "--lora-alpha", str(l["alpha"]), "--lora-dropout",
            str(l["dropout"]), "--lora-targets", ",".join(l["targets"]), "--base-dtype", l["base_dtype"]]


def training(plan):
    """' · LoRA r8 q_proj,v_proj, base bf16' for a LoRA case, '' for full training."""
    q = plan["question"]
    dpo = f" · DPO (ref {q['ref_logprobs']})" if q["recipe"] == "dpo" else ""
    if q["train"] == "frozen":
        return f" · frozen (no_grad forward), base {q['base_dtype']}"
    if q["train"] != "lora":
        return dpo
    l = q["lora"]
    drop = f" dropout {l['dropout']}" if l["dropout"] else ""
    return f" · LoRA r{l['rank']} {','.join(l['targets'])}{drop}, base {l['base_dtype']}{dpo}"


def routing(remat, cfg, cfg_path, meas, plan, question):
    """Mixtral: remat assumes balanced routing (every expert gets B*S*k/E tokens); with random weights
    the real routing is not. The measured per-layer expert token counts, the busiest expert's multiple
    of an even share (remat's --moe-capacity-factor), and the errors of a plan made with that factor
    (the same checkpointing, else None), which separate the routing assumption from the modelling."""
    B, S, prec, opt, impl, strat, extra = question
    E, k = cfg.get("num_local_experts", cfg.get("num_experts")), cfg["num_experts_per_tok"]
    share = B * S * k / E
    factors = [max(n) / share for n in meas["expert_tokens"]]
    c = min(max(max(factors), 1.0), E / k)
    out = {"expert_tokens": meas["expert_tokens"], "capacity_factor_per_layer": [round(f, 4) for f in factors],
           "capacity_factor": round(c, 4)}
    routed = remat_plan(remat, cfg_path, B, S, prec, opt, impl, strat, extra + ["--moe-capacity-factor", f"{c:.6f}"])
    if [s["keeps"] for s in routed["stages"]] != [s["keeps"] for s in plan["stages"]]:
        out["with_capacity_factor"] = None  # another checkpointing choice: not the measured step
    else:
        cmp = compare(routed, meas)
        out["with_capacity_factor"] = {"step": cmp["step"], "forward_backward": cmp["forward_backward"],
                                       "worst_boundary": cmp["worst_boundary"]}
    return out


def torch_version():
    done = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"], capture_output=True,
                          text=True)
    return done.stdout.strip() or "not installed"


def rel(pred, meas):
    return (pred - meas) / meas if meas else 0.0


def compare(plan, meas):
    timeline = [t for t in plan["timeline"] if t["action"] != "optimizer"]
    predicted = {}
    for t in timeline:
        a = t["action"]
        if a.endswith("*") or a.startswith("R_sel"):
            continue
        kind = "B" if a.startswith("B(") else "F"
        predicted[f"{kind}({a[a.index('(') + 1:a.index(')')]})"] = t["live_bytes"]
    bounds = []
    for e in meas["boundaries"]:
        if e["action"] in predicted:
            bounds.append({"at": e["action"], "predicted": predicted[e["action"]], "measured": e["live_bytes"],
                           "error": rel(predicted[e["action"]], e["live_bytes"])})
    fb = max(t["peak_bytes"] for t in timeline)
    return {
        "step": {"predicted": plan["allocator_peak_bytes"], "measured": meas["step_peak_bytes"],
                 "error": rel(plan["allocator_peak_bytes"], meas["step_peak_bytes"])},
        "forward_backward": {"predicted": fb, "measured": meas["forward_backward_peak_bytes"],
                             "error": rel(fb, meas["forward_backward_peak_bytes"])},
        "boundaries": bounds,
        "worst_boundary": max(bounds, key=lambda b: abs(b["error"])) if bounds else None,
        "predicted_peak_at": plan["peak_action"] + (" " + plan["peak_op"] if plan["peak_op"] else ""),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=["ci", "full"], default="ci")
    ap.add_argument("--remat", default=os.path.join(ROOT, "build", "bin", "remat"))
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--markdown")
    ap.add_argument("--tolerance", type=float, default=0.01)
    ap.add_argument("--only", default="", help="only the cases whose 'model B.. S.. precision optimizer impl "
                    "strategy' contains one of these comma-separated substrings")
    ap.add_argument("--jobs", type=int, default=2, help="measurements run at once")
    ap.add_argument("--markdown-from", help="only write --markdown from this earlier --json document")
    args = ap.parse_args()
    if args.markdown_from:
        with open(args.markdown_from) as f, open(args.markdown, "w") as out:
            out.write(markdown(json.load(f)))
        return
    only = args.only.split(",")
    todo = [c for c in cases(args.size)
            if any(o in f"{c[0]} B{c[2]} S{c[3]} {c[4]} {c[5]} {c[6]} {c[7]} {' '.join(c[8])}" for o in only)]
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        def one(n):
            name, cfg, B, S, prec, opt, impl, strat, extra = todo[n]
            case_dir = os.path.join(tmp, str(n))
            os.mkdir(case_dir)
            cfg_path = os.path.join(case_dir, f"{name}.json")
            with open(cfg_path, "w") as f:
                json.dump(cfg, f)
            plan = remat_plan(args.remat, cfg_path, B, S, prec, opt, impl, strat, extra)
            plan_path = os.path.join(case_dir, "plan.json")
            with open(plan_path, "w") as f:
                json.dump(plan, f)
            cmd = [sys.executable, os.path.join(HERE, "measure_step.py"), cfg_path, "--micro-batch", str(B),
                   "--seq", str(S), "--precision", prec, "--optimizer", opt, "--optimizer-impl", impl,
                   "--plan", plan_path] + lora_flags(plan)
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"sweep.py: {' '.join(cmd)}: {done.stderr.strip()}")
            meas = json.loads(done.stdout)
            r = {"model": name, "micro_batch": B, "seq": S, "precision": prec, "optimizer": opt,
                 "optimizer_impl": impl, "strategy": strat, "train": training(plan), **compare(plan, meas)}
            if plan["question"]["train"] == "lora":
                r["trainable_params"] = {"predicted": plan["question"]["trainable_params"],
                                         "measured": meas["trainable_params"]}
                r["all_params"] = {"predicted": plan["question"]["all_params"], "measured": meas["all_params"]}
                if r["trainable_params"]["predicted"] != r["trainable_params"]["measured"] or \
                        r["all_params"]["predicted"] != r["all_params"]["measured"]:
                    raise SystemExit(f"sweep.py: {name}: PEFT-style counts differ: {r['trainable_params']} "
                                     f"{r['all_params']}")
            if "expert_tokens" in meas:
                r["routing"] = routing(args.remat, cfg, cfg_path, meas, plan, (B, S, prec, opt, impl, strat, extra))
            wb = r["worst_boundary"]
            routed = ""
            if r.get("routing"):
                w = r["routing"]["with_capacity_factor"]
                routed = (f" (routing: capacity factor {r['routing']['capacity_factor']:.3f}" +
                          (f", step {w['step']['error']:+.3%} fwd+bwd {w['forward_backward']['error']:+.3%})" if w
                           else ", another plan)"))
            sys.stderr.write(f"[{n + 1}/{len(todo)}] {name} B{B} S{S} {prec} {opt}/{impl} {strat}{r['train']}: step "
                             f"{r['step']['error']:+.3%} fwd+bwd {r['forward_backward']['error']:+.3%} worst boundary "
                             f"{wb['at'] if wb else '-'} {wb['error'] if wb else 0:+.3%}{routed}\n")
            return r

        # each measurement is its own process (its own probe), one intra-op thread each
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            results = list(pool.map(one, range(len(todo))))
    worst = {k: max((abs(r[k]["error"]) for r in results), default=0.0) for k in ("step", "forward_backward")}
    worst["boundary"] = max((abs(r["worst_boundary"]["error"]) for r in results if r["worst_boundary"]), default=0.0)
    doc = {"generated_by": "/usr/bin/python3 tests/torch/sweep.py " + " ".join(sys.argv[1:]),
           "torch_version": torch_version(),
           "size": args.size, "cases": len(results), "seconds": round(time.time() - t0, 1),
           "tolerance": args.tolerance, "worst_abs_error": worst,
           "results": results}
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(doc))
    print(f"sweep.py: {len(results)} cases, worst |error|: step {worst['step']:.3%}, forward+backward "
          f"{worst['forward_backward']:.3%}, boundary {worst['boundary']:.3%} (tolerance {args.tolerance:.1%})")
    sys.exit(1 if max(worst.values()) > args.tolerance else 0)


def markdown(doc):
    def dist(key):
        errs = sorted(abs(r[key]["error"]) for r in doc["results"])
        q = lambda f: errs[min(len(errs) - 1, int(f * len(errs)))]
        return f"median {q(0.5):.3%}, 90th percentile {q(0.9):.3%}, worst {errs[-1]:.3%}"
    bounds = sorted(abs(b["error"]) for r in doc["results"] for b in r["boundaries"])
    w = doc["worst_abs_error"]
    head = [
        "# remat against real PyTorch training steps (torch " + doc.get("torch_version", "?") + ", CPU)",
        "",
        f"Generated by `{doc['generated_by']}` ({doc['cases']} cases, {doc['seconds']} s). Each case is a "
        "steady training step of a Hugging Face-style model measured to the byte (tests/torch/measure_step.py), "
        "with remat's plan applied through python/remat_torch, against `remat plan --profile hf-eager --torch "
        "cpu-1.13`. Error = (predicted - measured) / measured. Method and modelling: docs/torch.md.",
        "",
        f"- whole-step peak: {dist('step')}",
        f"- forward + backward peak: {dist('forward_backward')}",
        f"- stage boundaries ({len(bounds)} compared): median {bounds[len(bounds) // 2]:.3%}, worst "
        f"{w['boundary']:.3%}" if bounds else "- stage boundaries: none compared",
        "",
    ]
    lines = head + ["| model | B | S | precision | optimizer | strategy | step: predicted | measured | error | "
             "fwd+bwd error | worst boundary | predicted peak at |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in doc["results"]:
        wb = r["worst_boundary"]
        lines.append(f"| {r['model']} | {r['micro_batch']} | {r['seq']} | {r['precision']} | "
                     f"{r['optimizer']} ({r['optimizer_impl']}) | {r['strategy']}{r.get('train', '')} | "
                     f"{r['step']['predicted']:,} | "
                     f"{r['step']['measured']:,} | {r['step']['error']:+.3%} | {r['forward_backward']['error']:+.3%} | "
                     f"{wb['at'] + ' ' + format(wb['error'], '+.3%') if wb else '-'} | {r['predicted_peak_at']} |")
    routed = [r for r in doc["results"] if r.get("routing")]
    if routed:
        lines += ["", "Mixture of experts: remat assumes balanced routing (each expert B·S·k/E tokens); the "
                  "random-weight routers are not balanced. The busiest expert's multiple of an even share "
                  "(max over layers) is remat's `--moe-capacity-factor`; the last columns are the errors of a "
                  "plan made with it (same checkpointing; '-' where it chose another).", "",
                  "| model | B | S | precision | strategy | capacity factor per layer | step error (balanced) | "
                  "step error (factor) | fwd+bwd error (factor) | worst boundary (factor) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in routed:
            g, w = r["routing"], r["routing"]["with_capacity_factor"]
            wb = w["worst_boundary"] if w else None
            lines.append(f"| {r['model']} | {r['micro_batch']} | {r['seq']} | {r['precision']} | {r['strategy']} | "
                         f"{', '.join(format(f, '.3f') for f in g['capacity_factor_per_layer'])} | "
                         f"{r['step']['error']:+.3%} | "
                         + (f"{w['step']['error']:+.3%} | {w['forward_backward']['error']:+.3%} | "
                            f"{wb['at'] + ' ' + format(wb['error'], '+.3%') if wb else '-'} |" if w else "- | - | - |"))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
