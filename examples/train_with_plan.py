#!/usr/bin/env python3
"""Ask remat for the fastest plan under a memory budget, apply it, train, compare.

    PYTHONPATH=python /usr/bin/python3 examples/train_with_plan.py [--budget-fraction 0.5] [--steps 3]

1. remat_torch.plan() asks `remat plan --strategy optimal` for the fastest checkpointing plan
   whose whole-step peak stays within a budget: here, halfway between full recomputation and
   keeping everything, so that the plan has to choose.
2. remat_torch.apply_plan() applies it to the model through PyTorch's checkpoint API.
3. A few AdamW steps train the model on CPU; the second step's peak of live tensor bytes is
   measured exactly (tests/torch/alloc_probe.c counts every CPU storage) and printed against
   the prediction.

The model is the Hugging Face style GPT-2 of tests/torch/hf_models.py, a stand-in for
transformers (which Debian does not package); with transformers installed, build
`AutoModelForCausalLM.from_config(...)` instead: apply_plan finds transformer.h the same way.
Predictions use --torch cpu-1.13 --optimizer-impl for-loop, which is how this machine's torch runs.
"""

import argparse
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.join(ROOT, "tests", "torch"))

import measure_step  # noqa: E402  (the allocation probe)

CONFIG = {"model_type": "gpt2", "n_layer": 6, "n_embd": 128, "n_head": 4, "vocab_size": 8192, "n_positions": 512,
          "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1, "tie_word_embeddings": True}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget-fraction", type=float, default=0.5,
                    help="where the budget lies between full recomputation (0) and keeping everything (1)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    args = ap.parse_args()

    probe = measure_step.load_probe()
    if probe is None:
        measure_step.reexec_with_probe()  # restarts this script with the probe preloaded

    import torch

    import hf_models
    import remat_torch

    question = dict(micro_batch=args.micro_batch, seq=args.seq, precision="fp32", profile="hf-eager",
                    torch="cpu-1.13", optimizer_impl="for-loop", reserve_context="0B", reserve_workspace="0B",
                    fragmentation=0)
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "config.json")
        with open(config, "w") as f:
            json.dump(CONFIG, f)
        lo = remat_torch.plan(config, strategy="full", **question)["peak_bytes"]
        hi = remat_torch.plan(config, strategy="none", **question)["peak_bytes"]
        budget = int(lo + args.budget_fraction * (hi - lo))
        plan = remat_torch.plan(config, strategy="optimal", memory_budget=f"{budget}B", **question)

    torch.manual_seed(0)
    model = hf_models.build_model(CONFIG)
    hf_models.randomize_params(model, 0)  # N(0, 0.02) weights, as from_config would start
    keys_before = list(model.state_dict().keys())
    runs = remat_torch.apply_plan(model, plan)
    assert list(model.state_dict().keys()) == keys_before, "apply_plan changed the state_dict keys"
    print(f"remat plan: {plan['strategy']} within {budget:,} B (full recomputation {lo:,} B, keep everything "
          f"{hi:,} B); checkpointed block runs {runs}; predicted peak {plan['allocator_peak_bytes']:,} B")

    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, foreach=False)
    g = torch.Generator().manual_seed(1)
    measured = 0
    for step in range(args.steps):
        ids = torch.randint(0, CONFIG["vocab_size"], (args.micro_batch, args.seq), generator=g)
        probe.remat_probe_reset_peak()
        loss = model(ids, ids)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        peak = probe.remat_probe_peak(measure_step.TENSORS)
        if step == 1:
            measured = peak  # the first step creates the optimizer state; the second is steady
        print(f"step {step}: loss {loss.item():.4f}, peak of live tensors {peak:,} B")
        del loss, ids
    err = (plan["allocator_peak_bytes"] - measured) / measured
    print(f"predicted {plan['allocator_peak_bytes']:,} B, measured {measured:,} B (steady step): error {err:+.3%}")
    sys.exit(0 if abs(err) <= 0.01 else 1)


if __name__ == "__main__":
    main()
