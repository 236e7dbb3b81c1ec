#!/usr/bin/env python3
"""The trainer side of the FSDP + DPO example: wrap the policy in FSDP, apply remat's plan.

    torchrun --nproc_per_node 8 examples/fsdp_dpo/train_fsdp.py --model EleutherAI/pythia-6.9b --pairs 12
    /usr/bin/python3 examples/fsdp_dpo/train_fsdp.py --plan-only      # anywhere: the plan remat gives

Needs torch >= 2.0 with torch.distributed and transformers on a GPU machine; --plan-only needs
only the remat binary (see README.md).
"""

import argparse
import functools
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "python"))

import remat_torch  # noqa: E402

CONFIG = os.path.join(ROOT, "examples", "configs", "pythia-6.9b", "config.json")


def ask_remat(pairs, strategy):
    # DPO: each pair is a chosen and a rejected sequence, concatenated into one micro-batch of
    # 2 x pairs sequences; remat's --recipe dpo counts pairs and adds the frozen reference model.
    return remat_torch.plan(CONFIG, gpu="a100-80gb", sharding="fsdp", world_size=8, seq=512,
                            micro_batch=pairs, recipe="dpo", precision="bf16-mixed",
                            strategy=strategy)


def train(args, plan):
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp import MixedPrecision
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy
    from transformers import AutoModelForCausalLM
    from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXLayer

    dist.init_process_group("nccl")
    torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    policy = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32)
    wrap = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls={GPTNeoXLayer})
    policy = FSDP(policy, auto_wrap_policy=wrap, device_id=torch.cuda.current_device(),
                  mixed_precision=MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.bfloat16))
    # After FSDP wrapping, as the seed recipe does: the blocks are found under the FSDP units.
    remat_torch.apply_plan(policy, plan, blocks=policy.module.gpt_neox.layers)
    opt = torch.optim.AdamW(policy.parameters(), lr=5e-7)
    torch.cuda.reset_peak_memory_stats()
    for step in range(args.steps):
        ids = torch.randint(0, 50000, (2 * args.pairs, 512), device="cuda")
        loss = policy(input_ids=ids, labels=ids).loss  # stand-in for the DPO loss over the pairs
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    if dist.get_rank() == 0:
        print(f"predicted {plan['allocator_peak_bytes']:,} B, measured {torch.cuda.max_memory_allocated():,} B")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="EleutherAI/pythia-6.9b")
    ap.add_argument("--pairs", type=int, default=1, help="DPO pairs per GPU per micro-batch")
    ap.add_argument("--strategy", default="none")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--plan-only", action="store_true", help="print remat's plan and what apply_plan would do")
    args = ap.parse_args()
    plan = ask_remat(args.pairs, args.strategy)
    if args.plan_only:
        runs = remat_torch.segments(plan)
        print(f"{plan['strategy']}: {args.pairs} pair(s) per GPU, predicted peak {plan['peak_bytes'] / 2**30:.2f} GiB "
              f"({'fits' if plan['fits'] else 'does NOT fit'}); checkpointed block runs: {runs or 'none'}")
        return
    train(args, plan)


if __name__ == "__main__":
    main()
