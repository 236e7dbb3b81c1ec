"""remat_torch: a remat plan, applied to a PyTorch model through PyTorch's own checkpointing API.

    import remat_torch
    plan = remat_torch.plan("config.json", micro_batch=4, seq=1024, strategy="sqrt",
                            precision="bf16-mixed", profile="hf-eager")
    remat_torch.apply_plan(model, plan)        # model: a Hugging Face causal LM (see find_blocks)

plan() runs the `remat` binary with --json (the CLI is the one implementation of the planner)
and returns its document. apply_plan() reads which blocks the plan checkpoints:
- a block checkpointed alone goes through
  torch.distributed.algorithms._checkpoint.checkpoint_wrapper.apply_activation_checkpointing
  with CheckpointImpl.NO_REENTRANT and a check_fn built from the plan (the recipe FSDP users
  follow, and which works under FSDP);
- a segment of consecutive blocks recomputed from one checkpoint (sqrt, segments-K, optimal)
  is one non-reentrant torch.utils.checkpoint over those blocks: the segment's first block runs
  the whole segment, the others pass their input through (the model's forward still iterates
  its blocks, and its state_dict keys do not change).
Only pure Python and torch are needed; PYTHONPATH=python is enough.
"""

import json
import os
import shutil
import subprocess

__all__ = ["plan", "apply_plan", "apply_segments", "find_blocks", "segments", "PlanError"]

# transformer.h: GPT-2, Falcon; model.layers: Llama, Mistral, Qwen2, Gemma, Gemma2, Phi-3, Mixtral;
# gpt_neox.layers: GPT-NeoX
BLOCK_PATHS = ("transformer.h", "model.layers", "gpt_neox.layers")


class PlanError(ValueError):
    """A plan that cannot be applied to this model, or a remat that cannot be run."""


def _remat_binary(binary):
    if binary:
        return binary
    env = os.environ.get("REMAT")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    built = os.path.join(os.path.dirname(os.path.dirname(here)), "build", "bin", "remat")
    if os.path.exists(built):
        return built
    found = shutil.which("remat")
    if found:
        return found
    raise PlanError("remat_torch: no remat binary: build it (cmake -S . -B build && cmake --build build), "
                    "put it on PATH, or set REMAT=/path/to/remat")


def plan(config_or_model, binary=None, **question):
    """Runs `remat plan --json` and returns the plan (a dict).

    config_or_model: a preset name, a remat model JSON or a Hugging Face config.json path.
    question: remat plan's flags with '_' for '-', e.g. micro_batch=4, seq=1024,
    strategy="optimal", memory_budget="20GiB", offload_checkpoints=True."""
    exe = _remat_binary(binary)
    cmd = [exe, "plan", "--model", str(config_or_model), "--json"]
    for key, value in question.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            cmd.append(flag)
        elif value is not False and value is not None:
            cmd += [flag, str(value)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        raise PlanError(f"remat_torch: cannot run {exe}: {e.strerror}; set REMAT=/path/to/remat") from None
    if done.returncode != 0:
        raise PlanError(done.stderr.strip() or f"remat_torch: {' '.join(cmd)} exited with {done.returncode}")
    return json.loads(done.stdout)


def find_blocks(model, blocks=None):
    """The model's list of transformer blocks: `blocks` if given, else the first of
    transformer.h (GPT-2, Falcon), model.layers (Llama, Mistral, Qwen2, Gemma, Gemma2, Phi-3,
    Mixtral), gpt_neox.layers (NeoX)."""
    if blocks is not None:
        return blocks
    for path in BLOCK_PATHS:
        m = model
        for part in path.split("."):
            m = getattr(m, part, None)
            if m is None:
                break
        if m is not None:
            return m
    raise PlanError(f"remat_torch: no transformer blocks found in {type(model).__name__} (looked for "
                    f"{', '.join(BLOCK_PATHS)}); pass blocks=<the model's nn.ModuleList of blocks>")


def _load(plan_or_file):
    if isinstance(plan_or_file, dict):
        return plan_or_file
    with open(plan_or_file) as f:
        return json.load(f)


def segments(plan_doc):
    """The plan's checkpointed runs of blocks, as (first, last) block indices (0-based, inclusive).

    The plan's stages are the embedding, the blocks, the final norm and the head. A stage that
    keeps only its input starts a segment; the stages after it that keep nothing belong to it."""
    stages = plan_doc["stages"]
    if any(s.get("offload") for s in plan_doc.get("schedule", [])):
        raise PlanError("remat_torch: this plan offloads checkpoints to host memory, which apply_plan does "
                        "not apply yet; plan without --offload-checkpoints")
    runs, i = [], 0
    while i < len(stages):
        s = stages[i]
        if s["keeps"] == "input":
            j = i
            while j + 1 < len(stages) and stages[j + 1]["keeps"] == "none":
                j += 1
            outside = [stages[k]["name"] for k in range(i, j + 1) if stages[k]["kind"] != "block"]
            if outside:
                raise PlanError(f"remat_torch: the plan recomputes {', '.join(outside)}, which is not a "
                                "transformer block; apply_plan checkpoints blocks only")
            runs.append((i, j))
            i = j + 1
        elif s["keeps"] == "none":
            raise PlanError(f"remat_torch: stage {s['name']} keeps nothing but follows no checkpoint")
        elif s["keeps"] == "selective":
            raise PlanError("remat_torch: selective recomputation needs torch's selective activation "
                            "checkpointing (torch >= 2.4, torch.utils.checkpoint.create_selective_checkpoint_"
                            "contexts), which apply_plan does not use yet; plan with another strategy")
        else:
            i += 1
    first_block = next(k for k, s in enumerate(stages) if s["kind"] == "block")
    return [(a - first_block, b - first_block) for a, b in runs]


def apply_plan(model, plan, blocks=None):
    """Applies a remat plan (the dict or JSON file of `remat plan --json`) to model in place.

    blocks: the model's transformer blocks (found by itself for Hugging Face GPT-2, Llama,
    Mistral, NeoX, Qwen2, Gemma, Gemma2, Phi-3, Mixtral and Falcon). Returns the list of (first, last) block runs it checkpointed."""
    plan_doc = _load(plan)
    if plan_doc.get("question", {}).get("train") == "frozen":
        return []  # a forward under no_grad (--train frozen): nothing to checkpoint
    n = sum(1 for s in plan_doc["stages"] if s["kind"] == "block")
    return apply_segments(model, segments(plan_doc), n_blocks=n, blocks=blocks,
                          planned_for=plan_doc.get("question", {}).get("model", "?"))


def apply_segments(model, runs, n_blocks, blocks=None, planned_for="the plan's model"):
    """Checkpoints the given (first, last) runs of blocks (what `remat plan --emit torch` prints).

    A run of one block goes through apply_activation_checkpointing (NO_REENTRANT); a longer
    run is one non-reentrant checkpoint over its blocks. n_blocks: the block count the plan
    was made for, checked against the model's."""
    try:
        import torch  # noqa: F401
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
            CheckpointImpl, apply_activation_checkpointing, checkpoint_wrapper)
    except ImportError as e:
        raise PlanError(f"remat_torch: PyTorch is needed ({e}); install torch (Debian: apt-get install "
                        "python3-torch)") from None
    import functools

    blocks = find_blocks(model, blocks)
    if n_blocks != len(blocks):
        raise PlanError(f"remat_torch: the plan is for {planned_for} with {n_blocks} blocks, but this model has "
                        f"{len(blocks)} blocks; plan for this model's config")
    runs = [tuple(r) for r in runs]
    singles = {id(blocks[a]) for a, b in runs if a == b}
    if singles:
        wrapper = functools.partial(checkpoint_wrapper, checkpoint_impl=CheckpointImpl.NO_REENTRANT)
        try:
            apply_activation_checkpointing(model, checkpoint_wrapper_fn=wrapper, check_fn=lambda m: id(m) in singles)
        except ValueError:
            # Debian's torch 1.13 under Python 3.11: apply_activation_checkpointing imports
            # torch.distributed.fsdp, whose dataclasses Python 3.11 rejects ("mutable default").
            # Wrap the same modules in place, as its recursive wrap would.
            for k in range(len(blocks)):
                if id(blocks[k]) in singles:
                    blocks[k] = wrapper(blocks[k])
    for a, b in runs:
        if a != b:
            _wrap_segment(blocks, a, b)
    return runs


def _autocast_state():
    """The autocast settings a recomputation must run under (what torch.utils.checkpoint records)."""
    import torch

    return (torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype(), torch.is_autocast_cpu_enabled(),
            torch.get_autocast_cpu_dtype(), torch.is_autocast_cache_enabled())


class _SegmentRun:
    """One forward of a checkpointed segment: torch 1.13's non-reentrant checkpoint
    (torch.utils.checkpoint._checkpoint_without_reentrant), spread over the segment's blocks.

    Each block runs at its own call, with its own arguments, under saved-tensor hooks that keep a
    placeholder instead of each saved tensor. The first unpack in backward runs the whole segment
    again from its input, with every block's recorded arguments and the forward's RNG and autocast
    state, and fills the placeholders in the order the tensors were saved. It holds what torch's
    checkpoint over the segment would: the segment's input, the blocks' other arguments, the RNG
    state, until the saved tensors that reference it are gone."""

    def __init__(self, forwards, hidden_states, preserve_rng_state=True):
        import weakref

        import torch
        from torch.utils.checkpoint import get_device_states

        self.forwards = forwards
        self.input = hidden_states
        self.calls = []  # (args, kwargs) of each block after the hidden states
        self.autocast = _autocast_state()
        self.preserve = preserve_rng_state
        self.cpu_state = torch.get_rng_state() if preserve_rng_state else None
        self.gpu_devices, self.gpu_states = [], []
        if preserve_rng_state and torch.cuda._initialized:
            self.gpu_devices, self.gpu_states = get_device_states(hidden_states)
        self.storage = weakref.WeakKeyDictionary()
        self.holders = []

    def pack(self, x):
        import weakref

        class Holder:
            pass

        h = Holder()
        self.holders.append(weakref.ref(h))
        return h

    def unpack(self, h):
        if len(self.storage) == 0:
            self._recompute()
        if h not in self.storage:
            raise RuntimeError("remat_torch: a tensor saved in a checkpointed segment was read twice without "
                               "recomputation in between, which torch's non-reentrant checkpoint does not support")
        return self.storage[h]

    def _recompute(self):
        import torch
        from torch.utils.checkpoint import set_device_states

        counter = 0

        def inner_pack(inner):
            nonlocal counter
            counter += 1
            if counter > len(self.holders):
                return None
            h = self.holders[counter - 1]()
            if h is not None:  # its SavedVariable is alive: backward still reads it
                self.storage[h] = inner.detach()
            return None

        def inner_unpack(packed):
            raise RuntimeError("remat_torch: backward through a tensor the segment's recomputation made")

        gpu_on, gpu_dtype, cpu_on, cpu_dtype, cache = self.autocast
        with torch.random.fork_rng(devices=self.gpu_devices, enabled=self.preserve):
            if self.preserve:
                torch.set_rng_state(self.cpu_state)
                if self.gpu_devices:
                    set_device_states(self.gpu_devices, self.gpu_states)
            with torch.enable_grad(), \
                    torch.cuda.amp.autocast(enabled=gpu_on, dtype=gpu_dtype, cache_enabled=cache), \
                    torch.cpu.amp.autocast(enabled=cpu_on, dtype=cpu_dtype, cache_enabled=cache), \
                    torch.autograd.graph.saved_tensors_hooks(inner_pack, inner_unpack):
                out = self.input
                for fwd, (args, kwargs) in zip(self.forwards, self.calls):
                    res = fwd(out, *args, **kwargs)
                    out = res[0] if isinstance(res, tuple) else res


def _wrap_segment(blocks, first, last):
    """Blocks first..last become one checkpoint: each still runs at its own call with its own
    arguments (layers may differ in them: Gemma2's and Qwen2's sliding-window layers get another
    attention mask), and backward recomputes the whole segment once, from the segment's input."""
    import torch

    originals = [blocks[k].forward for k in range(first, last + 1)]
    current = {"run": None}

    def make_forward(k):
        fwd = originals[k]

        def forward(hidden_states, *args, **kwargs):
            if not torch.is_grad_enabled():
                return fwd(hidden_states, *args, **kwargs)
            if k == 0:
                current["run"] = _SegmentRun(originals, hidden_states)
            run = current["run"]
            if run is None or len(run.calls) != k:
                raise PlanError("remat_torch: the blocks of a checkpointed segment were not called in order, "
                                "first to last, once each")
            run.calls.append((args, kwargs))
            if k == len(originals) - 1:
                current["run"] = None  # the saved tensors' hooks hold the run from here on
            with torch.autograd.graph.saved_tensors_hooks(run.pack, run.unpack):
                return fwd(hidden_states, *args, **kwargs)
        return forward

    for k in range(first, last + 1):
        blocks[k].forward = make_forward(k - first)
