#!/usr/bin/env python3
"""Measure which tensors PyTorch autograd saves for backward in Hugging Face
style eager transformer stages (GPT-2, Llama, GPT-NeoX, Qwen2, Gemma, Gemma2,
Phi-3, Mixtral, Falcon).

Regenerate the committed test data with:

    /usr/bin/python3 tests/torch/measure_saved_tensors.py > tests/data/hf_eager_saved.json

The modules of hf_modules.py mirror the eager code paths in recent Hugging Face transformers
(v4.48+: modeling_gpt2.py, modeling_llama.py, modeling_gpt_neox.py and
loss_utils.ForCausalLMLoss) op for op, because what autograd saves depends on
exactly which intermediate tensors exist.  They were written for this
measurement; transformers itself is not needed.

How a saved tensor is found and named
-------------------------------------
* The stage forward runs inside torch.autograd.graph.saved_tensors_hooks.  The
  pack hook records every tensor autograd saves, together with the "scope"
  active at that moment (see Tracker.scope).  Afterwards the grad_fn graph is
  walked and every node's `_saved_<field>` attribute is read; reading it calls
  the unpack hook, which tells which node and field saved which packed tensor
  ("saved_by": ["NodeName.field", ...]).
* Memory is counted per STORAGE (keyed on the storage data_ptr): a view counts
  as its whole storage, every storage once.
* Parameters, module buffers (e.g. the GPT-2 causal-mask `bias` buffer) and
  autocast's low-precision copies of parameters are not activations; they are
  listed under "excluded" with a reason.
* Every other storage gets a name:
    1. an explicit label given where the tensor is created in the stage code
       (Tracker.label); the first label of a storage is its name, later labels
       of the same storage (e.g. a `.to(dtype)` that is a no-op) become aliases;
    2. otherwise (tensors created inside torch ops: layer-norm mean/rstd,
       dropout masks, matmul's contiguous copies, autocast casts of
       activations, ...) the name comes from the scope active when it was
       saved, which maps "Node.field" (or "field") to a name.
  Names are "<module path relative to the stage>.<role>"; the stage input is
  "x" (block and final_norm stages).  A storage that ends up without a name,
  or two storages with the same name, abort the script.
"""

import contextlib
import json
import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

import hf_modules
from hf_modules import (CausalLMHead, Cfg, GPT2Block, GPT2Embeddings, GPTNeoXLayer, LlamaDecoderLayer,
                        LlamaRMSNorm, LlamaRotaryEmbedding, dropout_scope, label, layer_norm_scope,
                        randomize_params, scope)

REGEN_COMMAND = "/usr/bin/python3 tests/torch/measure_saved_tensors.py > tests/data/hf_eager_saved.json"

DTYPE_NAMES = {
    torch.float32: "float32",
    torch.bfloat16: "bfloat16",
    torch.float16: "float16",
    torch.int64: "int64",
    torch.bool: "bool",
    torch.uint8: "uint8",
    torch.float64: "float64",
    torch.int32: "int32",
}


def dtype_name(dt):
    if dt not in DTYPE_NAMES:
        raise RuntimeError(f"unexpected dtype {dt}")
    return DTYPE_NAMES[dt]


def storage_ptr(t):
    return t.storage().data_ptr()


def storage_nbytes(t):
    return t.storage().nbytes()


def covers_storage(t):
    return t.numel() * t.element_size() == storage_nbytes(t)


# --------------------------------------------------------------------------
# Tracker: labels, scopes, pack/unpack hooks
# --------------------------------------------------------------------------


class Tracker:
    def __init__(self):
        self.labels = {}  # storage ptr -> list of names
        self.label_shapes = {}  # storage ptr -> shape of a labelled tensor covering it
        self.keep = []  # keep labelled tensors alive so storage ptrs are not reused
        self.scopes = [("", {})]
        self.packs = []  # list of dicts: tensor, scope name, scope mapping
        self.last_unpacked = []
        self.shared = set()  # storage ptrs of shared (per-model) inputs
        self.model_inputs = set()  # storage ptrs of model inputs (token ids)

    def label(self, t, name, shared=False, model_input=False):
        ptr = storage_ptr(t)
        names = self.labels.setdefault(ptr, [])
        if name not in names:
            names.append(name)
        if ptr not in self.label_shapes and covers_storage(t):
            self.label_shapes[ptr] = list(t.shape)
        if shared:
            self.shared.add(ptr)
        if model_input:
            self.model_inputs.add(ptr)
        self.keep.append(t)
        return t

    @contextlib.contextmanager
    def scope(self, name, mapping=None):
        self.scopes.append((name, dict(mapping or {})))
        try:
            yield
        finally:
            self.scopes.pop()

    def pack(self, t):
        name, mapping = self.scopes[-1]
        self.packs.append({"tensor": t, "scope": name, "mapping": mapping})
        return len(self.packs) - 1

    def unpack(self, idx):
        self.last_unpacked.append(idx)
        return self.packs[idx]["tensor"]

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)


T = None  # the active tracker (set per case)


# --------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------

PRECISIONS = {
    # name: (module/input dtype, autocast dtype or None)
    "fp32": (torch.float32, None),
    "bf16": (torch.bfloat16, None),
    "bf16-mixed": (torch.float32, torch.bfloat16),
}


def walk_graph(roots):
    """Return {pack index: ["Node.field", ...]} by reading every _saved_* attribute."""
    owners = {}
    seen = set()
    stack = [r for r in roots if r is not None]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        node_name = type(node).__name__
        for attr in sorted(dir(node)):
            if not attr.startswith("_saved_"):
                continue
            T.last_unpacked.clear()
            getattr(node, attr)
            for idx in T.last_unpacked:
                owners.setdefault(idx, []).append(f"{node_name}.{attr[len('_saved_'):]}")
        for nxt, _ in node.next_functions:
            if nxt is not None:
                stack.append(nxt)
    return owners


def analyse(module, outputs):
    """Group the packed tensors by storage and classify/name them."""
    global owners_cache
    owners = walk_graph([o.grad_fn for o in outputs])
    owners_cache = owners
    unowned = [i for i in range(len(T.packs)) if i not in owners]
    if unowned:
        raise RuntimeError(f"packed tensors not reachable from the outputs: {unowned}")

    params = {storage_ptr(p): n for n, p in module.named_parameters()}
    buffers = {storage_ptr(b): n for n, b in module.named_buffers()}
    param_list = list(module.named_parameters())
    modules = dict(module.named_modules())

    storages = {}  # ptr -> info, in first-pack order
    for idx, rec in enumerate(T.packs):
        t = rec["tensor"]
        ptr = storage_ptr(t)
        info = storages.setdefault(ptr, {"packs": [], "tensor": t})
        info["packs"].append(idx)

    tensors, excluded = [], []
    names_seen = {}
    for ptr, info in storages.items():
        t = info["tensor"]
        saved_by = []
        for idx in info["packs"]:
            for o in owners[idx]:
                if o not in saved_by:
                    saved_by.append(o)
        nbytes = storage_nbytes(t)
        shape = T.label_shapes.get(ptr)
        if shape is None:
            cover = [T.packs[i]["tensor"] for i in info["packs"] if covers_storage(T.packs[i]["tensor"])]
            shape = list(cover[0].shape) if cover else [nbytes // t.element_size()]
        entry_base = {"shape": shape, "dtype": dtype_name(t.dtype), "bytes": nbytes, "saved_by": saved_by}

        if ptr in params:
            excluded.append({"name": params[ptr], "reason": "parameter", **entry_base})
            continue
        if ptr in buffers:
            mapped = mapped_names(info)
            excluded.append({"name": mapped[0] if mapped else buffers[ptr],
                             "reason": f"module buffer '{buffers[ptr]}' (a view of it is saved; "
                                       f"allocated once per model, not per step)", **entry_base})
            continue
        flat = torch.empty(0, dtype=t.dtype).set_(t.storage())
        copy_of = None
        if ptr not in T.labels and t.dtype != torch.float32 and t.is_floating_point():
            for pname, prm in param_list:
                if prm.numel() == flat.numel() and prm.dtype != t.dtype:
                    if torch.equal(prm.detach().reshape(-1).to(t.dtype), flat):
                        copy_of = pname
                        break
        if copy_of is not None:
            owner = modules.get(copy_of.rsplit(".", 1)[0])
            if isinstance(owner, hf_modules.FalconLinear):
                # FalconLinear multiplies by weight.T, a non-leaf view: autocast casts it afresh at
                # every call (it caches casts of leaves only), and the matmul saves the copy.
                reason = (f"autocast {dtype_name(t.dtype)} copy of parameter '{copy_of}', NOT cached: "
                          f"FalconLinear's `input @ weight.T` casts a non-leaf view at every call and the "
                          f"matmul saves it, so it lives as a saved tensor (remat models it in the graph)")
            else:
                reason = (f"autocast {dtype_name(t.dtype)} copy of parameter '{copy_of}' "
                          f"(weight memory held by the autocast cache, not an activation)")
            excluded.append({"name": f"{copy_of}@{dtype_name(t.dtype)}", "reason": reason, **entry_base})
            continue

        labels = list(T.labels.get(ptr, []))
        mapped = mapped_names(info)
        if t.dtype == torch.float64 and t.dim() == 0 and ptr not in T.labels:
            excluded.append({"name": (mapped or ["?"])[0],
                             "reason": "Python float operand wrapped by torch as a 0-dim float64 tensor; "
                                       "it stays in host memory (also when training on CUDA)",
                             **entry_base})
            continue
        # The role at the saving op (scope mapping) of a saved tensor that
        # spans the whole storage names it; else a label given at creation
        # (e.g. GPT-2 with batch 1 saves views of the fused qkv output: "attn.qkv");
        # else the role of a saved view.  Other names become aliases.
        covering = mapped_names(info, covering_only=True)
        partial = mapped_names(info, covering_only=False)
        ordered = covering + labels + partial
        all_names = []
        for n in ordered:
            if n not in all_names:
                all_names.append(n)
        if not all_names:
            raise RuntimeError(
                f"unnamed saved storage: dtype={t.dtype} shape={list(t.shape)} bytes={nbytes} "
                f"saved_by={saved_by} scopes={[T.packs[i]['scope'] for i in info['packs']]}")
        name = all_names[0]
        if name in names_seen:
            raise RuntimeError(f"two saved storages named {name!r}: {names_seen[name]} and {entry_base}")
        names_seen[name] = entry_base
        entry = {"name": name, **entry_base, "shared_input": ptr in T.shared}
        if ptr in T.model_inputs:
            entry["model_input"] = True
        aliases = all_names[1:]
        if aliases:
            entry["aliases"] = aliases
        tensors.append(entry)
    primary = {e["name"] for e in tensors}
    for e in tensors:
        if "aliases" in e:
            e["aliases"] = [a for a in e["aliases"] if a not in primary]
            if not e["aliases"]:
                del e["aliases"]
    total = sum(e["bytes"] for e in tensors if not e["shared_input"])
    return tensors, total, excluded


def mapped_names(info, covering_only=None):
    """Names the scope mappings give this storage, in pack order."""
    out = []
    for idx in info["packs"]:
        rec = T.packs[idx]
        if covering_only is not None and covers_storage(rec["tensor"]) != covering_only:
            continue
        for o in owners_cache[idx]:
            node, field = o.split(".", 1)
            name = rec["mapping"].get(o, rec["mapping"].get(field))
            if name is not None and name not in out:
                out.append(name)
    return out


owners_cache = {}


def run_case(case, build, run):
    """build() -> module; run(module, dtype) -> list of output tensors (forward
    only, inside hooks).  Fills in tensors / total_bytes / excluded."""
    global T, owners_cache
    dtype, autocast_dtype = PRECISIONS[case["precision"]]
    torch.manual_seed(1234)
    module = build()
    randomize_params(module, 4321)
    module = module.to(dtype)
    module.train()
    T = Tracker()
    hf_modules.set_tracker(T)
    ctx = (torch.autocast("cpu", dtype=autocast_dtype) if autocast_dtype is not None
           else contextlib.nullcontext())
    with ctx:
        outputs = run(module, dtype)
    tensors, total, excluded = analyse(module, outputs)
    case["tensors"] = tensors
    case["total_bytes"] = total
    case["excluded"] = excluded
    T = None
    hf_modules.set_tracker(None)
    return case


def base_case(arch, stage, precision, B, S, H, A=None, KV=None, F_=None, V=None,
              attn_dropout=None, resid_dropout=None, embd_dropout=None, activation=None, **extra):
    case = {
        "arch": arch, "stage": stage, "precision": precision,
        "autocast_device": "cpu" if PRECISIONS[precision][1] is not None else None,
        "batch": B, "seq": S, "hidden": H, "heads": A, "kv_heads": KV, "ffn": F_, "vocab": V,
        "attn_dropout": attn_dropout, "resid_dropout": resid_dropout, "embd_dropout": embd_dropout,
        "activation": activation,
    }
    case.update(extra)
    return case


def stage_input(B, S, H, dtype):
    """A non-leaf activation like the output of the previous stage (autocast
    caches casts of leaf tensors that require grad, so it must not be a leaf)."""
    g = torch.Generator().manual_seed(99)
    leaf = torch.randn(B, S, H, generator=g).to(dtype).requires_grad_()
    x = leaf.clone()
    return x


def causal_4d_mask(B, S, dtype):
    """The float mask HF builds once per model for eager attention:
    0 where attended, finfo(dtype).min above the diagonal; [B, 1, S, S]."""
    min_dtype = torch.finfo(dtype).min
    mask = torch.full((S, S), min_dtype, dtype=dtype).triu(1)
    return mask[None, None].expand(B, 1, S, S)


def token_ids(B, S, V, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (B, S), generator=g)


# ---------------- case builders ----------------


def gpt2_block_case(precision, B, S, H, A, F_, p_drop):
    case = base_case("gpt2", "block", precision, B, S, H, A, A, F_, None, p_drop, p_drop, None, "gelu_new",
                     head_dim=H // A)
    cfg = Cfg(hidden_size=H, num_attention_heads=A, n_inner=F_, max_position_embeddings=max(S, 64) * 2,
              attn_pdrop=p_drop, resid_pdrop=p_drop, layer_norm_epsilon=1e-5, activation_function="gelu_new")

    def run(m, dtype):
        x = stage_input(B, S, H, dtype)
        with T.hooks():
            label(x, "x")
            out = m(x)
        return [out]

    return run_case(case, lambda: GPT2Block(cfg), run)


def llama_block_case(precision, B, S, H, A, KV, F_, p_drop):
    case = base_case("llama", "block", precision, B, S, H, A, KV, F_, None, p_drop, None, None, "silu",
                     head_dim=H // A)
    cfg = Cfg(hidden_size=H, num_attention_heads=A, num_key_value_heads=KV, intermediate_size=F_,
              attention_dropout=p_drop, rms_norm_eps=1e-6, hidden_act="silu")

    def run(m, dtype):
        x = stage_input(B, S, H, dtype)
        rope = LlamaRotaryEmbedding(H // A)
        position_ids = torch.arange(S).unsqueeze(0)
        # computed once per model from inputs_embeds (fp32 under autocast)
        cos, sin = rope(x, position_ids)
        mask = causal_4d_mask(B, S, x.dtype)
        with T.hooks():
            label(x, "x")
            label(cos, "self_attn.rope.cos", shared=True)
            label(sin, "self_attn.rope.sin", shared=True)
            out = m(x, attention_mask=mask, position_embeddings=(cos, sin))
        return [out]

    return run_case(case, lambda: LlamaDecoderLayer(cfg), run)


def neox_block_case(precision, B, S, H, A, F_, p_drop, parallel=True, rotary_pct=0.25):
    head = H // A
    case = base_case("gpt_neox", "block", precision, B, S, H, A, A, F_, None, p_drop, p_drop, None, "gelu",
                     head_dim=head, rotary_dims=int(head * rotary_pct), parallel_residual=parallel)
    cfg = Cfg(hidden_size=H, num_attention_heads=A, intermediate_size=F_, attention_dropout=p_drop,
              hidden_dropout=p_drop, rotary_pct=rotary_pct, layer_norm_eps=1e-5, hidden_act="gelu",
              use_parallel_residual=parallel)

    def run(m, dtype):
        x = stage_input(B, S, H, dtype)
        rope = LlamaRotaryEmbedding(int(head * rotary_pct))
        position_ids = torch.arange(S).unsqueeze(0)
        cos, sin = rope(x, position_ids)
        mask = causal_4d_mask(B, S, x.dtype)
        with T.hooks():
            label(x, "x")
            label(cos, "attention.rope.cos", shared=True)
            label(sin, "attention.rope.sin", shared=True)
            out = m(x, attention_mask=mask, position_embeddings=(cos, sin))
        return [out]

    return run_case(case, lambda: GPTNeoXLayer(cfg), run)


def embedding_case(arch, precision, B, S, H, V, p_drop):
    case = base_case(arch, "embedding", precision, B, S, H, V=V,
                     embd_dropout=p_drop if arch != "llama" else None)

    if arch == "gpt2":
        cfg = Cfg(vocab_size=V, hidden_size=H, max_position_embeddings=max(S, 64) * 2, embd_pdrop=p_drop)
        build = lambda: GPT2Embeddings(cfg)

        def fwd(m, ids):
            return m(ids)
    elif arch == "llama":
        build = lambda: nn.ModuleDict({"embed_tokens": nn.Embedding(V, H)})

        def fwd(m, ids):
            with scope("embed_tokens", {"EmbeddingBackward0.indices": "input_ids"}):
                return label(m["embed_tokens"](ids), "output")
    else:
        build = lambda: nn.ModuleDict({"embed_in": nn.Embedding(V, H), "emb_dropout": nn.Dropout(p_drop)})

        def fwd(m, ids):
            with scope("embed_in", {"EmbeddingBackward0.indices": "input_ids"}):
                e = label(m["embed_in"](ids), "embed_in.output")
            with dropout_scope("emb_dropout"):
                return label(m["emb_dropout"](e), "output")

    def run(m, dtype):
        ids = token_ids(B, S, V, 7)
        with T.hooks():
            label(ids, "input_ids", model_input=True)
            out = fwd(m, ids)
        return [out]

    return run_case(case, build, run)


def final_norm_case(arch, precision, B, S, H):
    case = base_case(arch, "final_norm", precision, B, S, H)
    if arch == "gpt2":
        build = lambda: nn.ModuleDict({"ln_f": nn.LayerNorm(H, eps=1e-5)})
        name = "ln_f"
    elif arch == "gpt_neox":
        build = lambda: nn.ModuleDict({"final_layer_norm": nn.LayerNorm(H, eps=1e-5)})
        name = "final_layer_norm"
    else:
        build = lambda: nn.ModuleDict({"norm": LlamaRMSNorm(H, "norm", eps=1e-6)})
        name = "norm"

    def run(m, dtype):
        x = stage_input(B, S, H, dtype)
        with T.hooks():
            label(x, "x")
            if arch == "llama":
                out = label(m[name](x), "output")
            else:
                with layer_norm_scope(name):
                    out = label(m[name](x), "output")
        return [out]

    return run_case(case, build, run)


def head_case(arch, precision, B, S, H, V):
    case = base_case(arch, "head", precision, B, S, H, V=V)
    name = "embed_out" if arch == "gpt_neox" else "lm_head"

    def run(m, dtype):
        x = stage_input(B, S, H, dtype)
        labels = token_ids(B, S, V, 11)
        with T.hooks():
            label(x, f"{name}.input")
            label(labels, "labels", model_input=True)
            loss = m(x, labels)
        return [loss]

    return run_case(case, lambda: CausalLMHead(H, V, name), run)


# ---------------- new families (each case carries an HF config.json-style "config") ----------------


def rope_block_run(case, B, S, H, rot_dim, attn_path, build, moe=None):
    """Runs a rotary decoder layer: cos/sin computed once (shared), the eager float causal mask."""
    def run(m, dtype):
        x = stage_input(B, S, H, dtype)
        rope = LlamaRotaryEmbedding(rot_dim)
        position_ids = torch.arange(S).unsqueeze(0)
        cos, sin = rope(x, position_ids)
        mask = causal_4d_mask(B, S, x.dtype)
        with T.hooks():
            label(x, "x")
            label(cos, f"{attn_path}.rope.cos", shared=True)
            label(sin, f"{attn_path}.rope.sin", shared=True)
            out = m(x, attention_mask=mask, position_embeddings=(cos, sin))
        if moe is not None:
            case["expert_tokens"] = getattr(m, moe).expert_tokens
        return [out]

    return run_case(case, build, run)


def cfg_of(config_json, **extra):
    """The Cfg the modules read: the config.json keys plus the derived ones."""
    return Cfg(**{**config_json, **extra})


def qwen2_block_case(precision, B, S, H, A, KV, F_, p_drop):
    j = {"model_type": "qwen2", "hidden_size": H, "num_attention_heads": A, "num_key_value_heads": KV,
         "intermediate_size": F_, "num_hidden_layers": 1, "vocab_size": 256, "hidden_act": "silu",
         "rms_norm_eps": 1e-6, "attention_dropout": p_drop, "rope_theta": 10000.0, "tie_word_embeddings": False,
         "use_sliding_window": False}
    case = base_case("qwen2", "block", precision, B, S, H, A, KV, F_, None, p_drop, None, None, "silu",
                     head_dim=H // A, config=j)
    return rope_block_run(case, B, S, H, H // A, "self_attn", lambda: hf_modules.Qwen2DecoderLayer(cfg_of(j)))


def gemma_block_case(precision, B, S, H, A, KV, F_, D, p_drop):
    j = {"model_type": "gemma", "hidden_size": H, "num_attention_heads": A, "num_key_value_heads": KV,
         "head_dim": D, "intermediate_size": F_, "num_hidden_layers": 1, "vocab_size": 256,
         "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": 1e-6,
         "attention_bias": False, "attention_dropout": p_drop, "rope_theta": 10000.0, "tie_word_embeddings": True}
    case = base_case("gemma", "block", precision, B, S, H, A, KV, F_, None, p_drop, None, None,
                     "gelu_pytorch_tanh", head_dim=D, config=j)
    return rope_block_run(case, B, S, H, D, "self_attn", lambda: hf_modules.GemmaDecoderLayer(cfg_of(j)))


def gemma2_block_case(precision, B, S, H, A, KV, F_, D, p_drop, qpas, softcap=50.0):
    j = {"model_type": "gemma2", "hidden_size": H, "num_attention_heads": A, "num_key_value_heads": KV,
         "head_dim": D, "intermediate_size": F_, "num_hidden_layers": 1, "vocab_size": 256,
         "hidden_activation": "gelu_pytorch_tanh", "hidden_act": "gelu_pytorch_tanh", "rms_norm_eps": 1e-6,
         "attention_bias": False, "attention_dropout": p_drop, "rope_theta": 10000.0,
         "query_pre_attn_scalar": qpas, "attn_logit_softcapping": softcap, "final_logit_softcapping": 30.0,
         "sliding_window": 4096, "tie_word_embeddings": True}
    case = base_case("gemma2", "block", precision, B, S, H, A, KV, F_, None, p_drop, None, None,
                     "gelu_pytorch_tanh", head_dim=D, query_pre_attn_scalar=qpas, attn_logit_softcapping=softcap,
                     config=j)
    return rope_block_run(case, B, S, H, D, "self_attn", lambda: hf_modules.Gemma2DecoderLayer(cfg_of(j)))


def phi3_block_case(precision, B, S, H, A, KV, F_, p_drop):
    j = {"model_type": "phi3", "hidden_size": H, "num_attention_heads": A, "num_key_value_heads": KV,
         "intermediate_size": F_, "num_hidden_layers": 1, "vocab_size": 256, "hidden_act": "silu",
         "rms_norm_eps": 1e-5, "attention_dropout": p_drop, "resid_pdrop": p_drop, "embd_pdrop": 0.0,
         "rope_theta": 10000.0, "tie_word_embeddings": False}
    case = base_case("phi3", "block", precision, B, S, H, A, KV, F_, None, p_drop, p_drop, None, "silu",
                     head_dim=H // A, config=j)
    return rope_block_run(case, B, S, H, H // A, "self_attn", lambda: hf_modules.Phi3DecoderLayer(cfg_of(j)))


def mixtral_block_case(precision, B, S, H, A, KV, F_, E, K, p_drop):
    j = {"model_type": "mixtral", "hidden_size": H, "num_attention_heads": A, "num_key_value_heads": KV,
         "intermediate_size": F_, "num_hidden_layers": 1, "vocab_size": 256, "hidden_act": "silu",
         "rms_norm_eps": 1e-5, "attention_dropout": p_drop, "rope_theta": 1e6, "num_local_experts": E,
         "num_experts_per_tok": K, "router_jitter_noise": 0.0, "output_router_logits": False,
         "tie_word_embeddings": False}
    case = base_case("mixtral", "block", precision, B, S, H, A, KV, F_, None, p_drop, None, None, "silu",
                     head_dim=H // A, num_experts=E, experts_per_token=K, config=j)
    return rope_block_run(case, B, S, H, H // A, "self_attn", lambda: hf_modules.MixtralDecoderLayer(cfg_of(j)),
                          moe="block_sparse_moe")


def qwen2_moe_block_case(precision, B, S, H, A, KV, F_, E, K, Fe, Fs, norm_topk, p_drop):
    j = {"model_type": "qwen2_moe", "hidden_size": H, "num_attention_heads": A, "num_key_value_heads": KV,
         "intermediate_size": F_, "moe_intermediate_size": Fe, "shared_expert_intermediate_size": Fs,
         "num_hidden_layers": 1, "vocab_size": 256, "hidden_act": "silu", "rms_norm_eps": 1e-6,
         "attention_dropout": p_drop, "rope_theta": 1e6, "num_experts": E, "num_experts_per_tok": K,
         "norm_topk_prob": norm_topk, "decoder_sparse_step": 1, "mlp_only_layers": [],
         "output_router_logits": False, "tie_word_embeddings": False, "use_sliding_window": False}
    case = base_case("qwen2_moe", "block", precision, B, S, H, A, KV, F_, None, p_drop, None, None, "silu",
                     head_dim=H // A, num_experts=E, experts_per_token=K, config=j)
    return rope_block_run(case, B, S, H, H // A, "self_attn", lambda: hf_modules.Qwen2MoeDecoderLayer(cfg_of(j)),
                          moe="mlp")


FALCON_LAYOUTS = {
    # (a) Falcon-7B: parallel attention + MLP on one shared input_layernorm, multi-query (1 kv head)
    "7b": dict(new_decoder_architecture=False, multi_query=True, parallel_attn=True),
    # (b) Falcon-40B/180B: kv-head groups, ln_attn + ln_mlp (num_ln_in_parallel_attn None -> 2)
    "new_decoder": dict(new_decoder_architecture=True, multi_query=True, parallel_attn=True),
    # (c) sequential: input_layernorm -> attention -> dropout_add -> post_attention_layernorm -> MLP
    #     (multi_query=False: the [.., heads, 3, head_dim] split)
    "sequential": dict(new_decoder_architecture=False, multi_query=False, parallel_attn=False),
}


def falcon_block_case(precision, B, S, H, A, layout, p_drop, kv=None, bias=False, activation="gelu"):
    lay = FALCON_LAYOUTS[layout]
    j = {"model_type": "falcon", "hidden_size": H, "num_attention_heads": A, "num_hidden_layers": 1,
         "vocab_size": 256, **lay, "bias": bias, "alibi": False, "hidden_dropout": p_drop,
         "attention_dropout": p_drop, "layer_norm_epsilon": 1e-5, "rope_theta": 10000.0,
         "ffn_hidden_size": 4 * H, "activation": activation, "tie_word_embeddings": True}
    if kv is not None:
        j["num_kv_heads"] = kv
    kv_eff = j.get("num_kv_heads", A) if (lay["new_decoder_architecture"] or not lay["multi_query"]) else 1
    case = base_case("falcon", "block", precision, B, S, H, A, kv_eff, 4 * H, None, p_drop, p_drop, None, activation,
                     head_dim=H // A, falcon_layout=layout, config=j)
    cfg = cfg_of(j, num_kv_heads=j.get("num_kv_heads", A), num_ln_in_parallel_attn=None)
    return rope_block_run(case, B, S, H, H // A, "self_attention", lambda: hf_modules.FalconDecoderLayer(cfg))


def neox_fast_gelu_case(precision, B, S, H, A, F_):
    j = {"model_type": "gpt_neox", "hidden_size": H, "num_attention_heads": A, "intermediate_size": F_,
         "num_hidden_layers": 1, "vocab_size": 256, "hidden_act": "gelu_fast", "rotary_pct": 0.25,
         "use_parallel_residual": True, "attention_dropout": 0.0, "hidden_dropout": 0.0, "layer_norm_eps": 1e-5,
         "tie_word_embeddings": False}
    head = H // A
    case = base_case("gpt_neox", "block", precision, B, S, H, A, A, F_, None, 0.0, 0.0, None, "gelu_fast",
                     head_dim=head, rotary_dims=int(head * 0.25), parallel_residual=True, config=j)
    return rope_block_run(case, B, S, H, int(head * 0.25), "attention", lambda: GPTNeoXLayer(cfg_of(j)))


def gemma_embedding_case(arch, precision, B, S, H, V):
    j = {"model_type": arch, "hidden_size": H, "vocab_size": V, "num_hidden_layers": 1, "num_attention_heads": 4,
         "num_key_value_heads": 4, "head_dim": H // 4, "intermediate_size": 2 * H, "tie_word_embeddings": True}
    case = base_case(arch, "embedding", precision, B, S, H, V=V, config=j)

    def run(m, dtype):
        ids = token_ids(B, S, V, 7)
        with T.hooks():
            label(ids, "input_ids", model_input=True)
            with scope("embed_tokens", {"EmbeddingBackward0.indices": "input_ids"}):
                e = label(m["embed_tokens"](ids), "embed_tokens.output")
            out = label(hf_modules.gemma_scale_embeddings(e, H), "output")
        return [out]

    return run_case(case, lambda: nn.ModuleDict({"embed_tokens": nn.Embedding(V, H)}), run)


def gemma_final_norm_case(arch, precision, B, S, H):
    j = {"model_type": arch, "hidden_size": H, "vocab_size": 256, "num_hidden_layers": 1, "num_attention_heads": 4,
         "num_key_value_heads": 4, "head_dim": H // 4, "intermediate_size": 2 * H, "rms_norm_eps": 1e-6,
         "tie_word_embeddings": True}
    case = base_case(arch, "final_norm", precision, B, S, H, config=j)

    def run(m, dtype):
        x = stage_input(B, S, H, dtype)
        with T.hooks():
            label(x, "x")
            out = label(m["norm"](x), "output")
        return [out]

    return run_case(case, lambda: nn.ModuleDict({"norm": hf_modules.GemmaRMSNorm(H, "norm", eps=1e-6)}), run)


def gemma2_head_case(precision, B, S, H, V, cap=30.0):
    j = {"model_type": "gemma2", "hidden_size": H, "vocab_size": V, "num_hidden_layers": 1, "num_attention_heads": 4,
         "num_key_value_heads": 4, "head_dim": H // 4, "intermediate_size": 2 * H, "final_logit_softcapping": cap,
         "tie_word_embeddings": True}
    case = base_case("gemma2", "head", precision, B, S, H, V=V, final_logit_softcapping=cap, config=j)

    def run(m, dtype):
        x = stage_input(B, S, H, dtype)
        labels = token_ids(B, S, V, 11)
        with T.hooks():
            label(x, "lm_head.input")
            label(labels, "labels", model_input=True)
            loss = m(x, labels)
        return [loss]

    return run_case(case, lambda: CausalLMHead(H, V, "lm_head", final_logit_softcapping=cap), run)


def new_family_cases(precisions):
    cases = []
    qwen_shapes = [dict(B=2, S=24, H=64, A=4, F_=176), dict(B=3, S=40, H=96, A=8, F_=256)]
    for shp in qwen_shapes:
        A = shp["A"]
        for prec in precisions:
            for kv in (A, A // 2):
                cases.append(qwen2_block_case(prec, KV=kv, p_drop=0.0, **shp))
            cases.append(qwen2_block_case(prec, KV=A // 2, p_drop=0.1, **shp))

    # head_dim != hidden / heads, as in gemma-7b (16 x 256 = 4096 vs 3072); kv 1 as in gemma-2b
    gemma_shapes = [dict(B=2, S=24, H=64, A=4, F_=176, D=32), dict(B=3, S=40, H=96, A=4, F_=256, D=16)]
    for shp in gemma_shapes:
        for prec in precisions:
            for kv in (shp["A"], 1):
                cases.append(gemma_block_case(prec, KV=kv, p_drop=0.0, **shp))
            cases.append(gemma_block_case(prec, KV=1, p_drop=0.1, **shp))

    # query_pre_attn_scalar != head_dim, as in gemma-2-27b (144 vs 128)
    gemma2_shapes = [dict(B=2, S=24, H=64, A=4, F_=176, D=32, qpas=24), dict(B=3, S=40, H=96, A=4, F_=256, D=16, qpas=16)]
    for shp in gemma2_shapes:
        A = shp["A"]
        for prec in precisions:
            for kv in (A, A // 2):
                cases.append(gemma2_block_case(prec, KV=kv, p_drop=0.0, **shp))
            cases.append(gemma2_block_case(prec, KV=A // 2, p_drop=0.1, **shp))

    phi3_shapes = [dict(B=2, S=24, H=64, A=4, F_=176), dict(B=3, S=40, H=96, A=8, F_=256)]
    for shp in phi3_shapes:
        A = shp["A"]
        for prec in precisions:
            for kv in (A, A // 2):
                cases.append(phi3_block_case(prec, KV=kv, p_drop=0.0, **shp))
            cases.append(phi3_block_case(prec, KV=A // 2, p_drop=0.1, **shp))

    mixtral_shapes = [dict(B=2, S=24, H=64, A=4, KV=2, F_=128), dict(B=3, S=40, H=96, A=8, KV=4, F_=192)]
    for shp in mixtral_shapes:
        for prec in precisions:
            cases.append(mixtral_block_case(prec, E=4, K=2, p_drop=0.0, **shp))
        cases.append(mixtral_block_case("fp32", E=4, K=2, p_drop=0.1, **shp))
    qwen2_moe_shapes = [dict(B=2, S=24, H=64, A=4, KV=4, F_=176, Fe=48, Fs=128),
                        dict(B=3, S=40, H=96, A=8, KV=4, F_=256, Fe=64, Fs=192)]
    for shp in qwen2_moe_shapes:
        for prec in precisions:
            cases.append(qwen2_moe_block_case(prec, E=6, K=3, norm_topk=False, p_drop=0.0, **shp))
        cases.append(qwen2_moe_block_case("fp32", E=6, K=3, norm_topk=True, p_drop=0.1, **shp))

    falcon_shapes = [dict(B=2, S=24, H=64, A=4), dict(B=3, S=40, H=128, A=8)]
    for shp in falcon_shapes:
        for prec in precisions:
            cases.append(falcon_block_case(prec, layout="7b", p_drop=0.0, **shp))
            cases.append(falcon_block_case(prec, layout="new_decoder", p_drop=0.0, kv=2, **shp))
            cases.append(falcon_block_case(prec, layout="sequential", p_drop=0.0, **shp))
        cases.append(falcon_block_case("fp32", layout="7b", p_drop=0.1, **shp))
        cases.append(falcon_block_case("fp32", layout="sequential", p_drop=0.1, **shp))
    for prec in ("fp32", "bf16-mixed"):
        cases.append(falcon_block_case(prec, layout="7b", p_drop=0.0, bias=True, **falcon_shapes[0]))

    for prec in precisions:
        cases.append(neox_fast_gelu_case(prec, B=2, S=24, H=64, A=4, F_=256))

    stage_shapes = [dict(B=2, S=24, H=64, V=256), dict(B=3, S=40, H=96, V=1000)]
    for shp in stage_shapes:
        for prec in precisions:
            for arch in ("gemma", "gemma2"):
                cases.append(gemma_embedding_case(arch, prec, **shp))
                cases.append(gemma_final_norm_case(arch, prec, shp["B"], shp["S"], shp["H"]))
            cases.append(gemma2_head_case(prec, **shp))
    cases.append(gemma2_head_case("fp32", B=1, S=24, H=64, V=256))
    return cases


# ---------------- CPU autocast observations ----------------


def observe_cpu_autocast():
    g = torch.Generator().manual_seed(5)

    def mk(shape, dt):
        return torch.randn(shape, generator=g).to(dt)

    f32, b16 = torch.float32, torch.bfloat16
    ops = {
        "addmm": lambda a, b: torch.addmm(mk([4], a), mk([3, 5], a), mk([5, 4], b)),
        "mm": lambda a, b: torch.mm(mk([3, 5], a), mk([5, 4], b)),
        "bmm": lambda a, b: torch.bmm(mk([2, 3, 5], a), mk([2, 5, 4], b)),
        "matmul": lambda a, b: torch.matmul(mk([2, 2, 3, 5], a), mk([2, 2, 5, 4], b)),
        "linear": lambda a, b: F.linear(mk([2, 3, 5], a), mk([4, 5], b)),
        "baddbmm": lambda a, b: torch.baddbmm(mk([2, 3, 4], a), mk([2, 3, 5], a), mk([2, 5, 4], b)),
        "softmax": lambda a, b: torch.softmax(mk([3, 5], a), -1),
        "softmax(dtype=float32)": lambda a, b: F.softmax(mk([3, 5], a), dim=-1, dtype=torch.float32),
        "log_softmax": lambda a, b: torch.log_softmax(mk([3, 5], a), -1),
        "layer_norm": lambda a, b: F.layer_norm(mk([3, 5], a), (5,), mk([5], b), mk([5], b)),
        "cross_entropy": lambda a, b: F.cross_entropy(mk([3, 5], a), torch.tensor([0, 1, 2])),
        "nll_loss": lambda a, b: F.nll_loss(mk([3, 5], a), torch.tensor([0, 1, 2])),
        "pow": lambda a, b: torch.pow(mk([3, 5], a), 2),
        "mean": lambda a, b: mk([3, 5], a).mean(-1, keepdim=True),
        "rsqrt": lambda a, b: torch.rsqrt(mk([3, 5], a).abs() + 1),
        "silu": lambda a, b: F.silu(mk([3, 5], a)),
        "gelu": lambda a, b: F.gelu(mk([3, 5], a)),
        "tanh": lambda a, b: torch.tanh(mk([3, 5], a)),
        "where": lambda a, b: torch.where(torch.ones(3, 5, dtype=torch.bool), mk([3, 5], a), mk([], b)),
        "mul": lambda a, b: mk([3, 5], a) * mk([3, 5], b),
        "add": lambda a, b: mk([3, 5], a) + mk([3, 5], b),
        "div(0-dim)": lambda a, b: mk([3, 5], a) / mk([], b),
        "embedding": lambda a, b: F.embedding(torch.tensor([[0, 1]]), mk([4, 5], a)),
        "dropout": lambda a, b: F.dropout(mk([3, 5], a), 0.1, True),
        "exp": lambda a, b: torch.exp(mk([3, 5], a)),
        "sum": lambda a, b: mk([3, 5], a).sum(),
    }
    result = {}
    for name, fn in ops.items():
        row = {}
        for key, (a, b) in {"fp32_inputs": (f32, f32), "bf16_inputs": (b16, b16),
                            "bf16_and_fp32_inputs": (b16, f32)}.items():
            try:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    out = fn(a, b)
                row[key] = dtype_name(out.dtype)
            except RuntimeError as e:
                row[key] = "error: " + str(e).splitlines()[0][:120]
        result[name] = row
    return {
        "autocast": "torch.autocast('cpu', dtype=torch.bfloat16)",
        "output_dtype": result,
        "note": ("output dtype of each op run under CPU autocast; 'bf16_and_fp32_inputs' passes the first "
                 "operand(s) in bf16 and the others in fp32 (for unary ops it equals bf16_inputs). "
                 "An op whose output follows its inputs is not on any CPU autocast list."),
    }


# ---------------- main ----------------


def main():
    torch.set_num_threads(1)
    cases = []
    precisions = ["fp32", "bf16", "bf16-mixed"]

    gpt2_shapes = [
        dict(B=2, S=24, H=64, A=4, F_=256),
        dict(B=3, S=40, H=96, A=6, F_=320),
        dict(B=1, S=128, H=256, A=8, F_=1024),
    ]
    for shp in gpt2_shapes:
        for prec in precisions:
            for p in (0.0, 0.1):
                cases.append(gpt2_block_case(prec, p_drop=p, **shp))

    llama_shapes = [
        dict(B=2, S=24, H=64, A=4, F_=176),
        dict(B=3, S=40, H=96, A=8, F_=256),
        dict(B=1, S=128, H=256, A=8, F_=688),
    ]
    for shp in llama_shapes:
        A = shp["A"]
        for prec in precisions:
            for kv in (A, A // 2, A // 4):
                cases.append(llama_block_case(prec, KV=kv, p_drop=0.0, **shp))
            cases.append(llama_block_case(prec, KV=A // 2, p_drop=0.1, **shp))

    neox_shapes = [
        dict(B=2, S=24, H=64, A=4, F_=256),
        dict(B=3, S=40, H=128, A=4, F_=512),
    ]
    for shp in neox_shapes:
        for prec in precisions:
            for p in (0.0, 0.1):
                cases.append(neox_block_case(prec, p_drop=p, **shp))
        cases.append(neox_block_case("fp32", p_drop=0.0, parallel=False, **shp))

    stage_shapes = [dict(B=2, S=24, H=64, V=256), dict(B=3, S=40, H=96, V=1000)]
    for arch in ("gpt2", "llama", "gpt_neox"):
        for shp in stage_shapes:
            for prec in precisions:
                drops = (0.0, 0.1) if arch != "llama" else (0.0,)
                for p in drops:
                    cases.append(embedding_case(arch, prec, p_drop=p, **shp))
                cases.append(final_norm_case(arch, prec, shp["B"], shp["S"], shp["H"]))
                cases.append(head_case(arch, prec, **shp))
        # B == 1: the shifted labels are a view of the padded labels (no copy)
        cases.append(head_case(arch, "fp32", B=1, S=24, H=64, V=256))

    cases += new_family_cases(precisions)

    doc = {
        "generated_by": REGEN_COMMAND,
        "torch_version": torch.__version__,
        "description": ("Tensors PyTorch autograd saves for backward in HF-transformers-style eager stages "
                        "(forward in training mode, all parameters require grad), one entry per storage; "
                        "see tests/data/README.md."),
        "notes": NOTES,
        "cpu_autocast_observed": observe_cpu_autocast(),
        "cases": cases,
    }
    sys.stdout.write(dump_json(doc))


def dump_json(doc):
    """Indented JSON, but every tensor / excluded entry on one line."""
    def enc(obj, ind):
        pad = " " * ind
        if isinstance(obj, dict):
            if all(not isinstance(v, (dict, list)) or (isinstance(v, list) and len(json.dumps(v)) <= 200 and
                   all(not isinstance(x, (dict, list)) for x in v)) for v in obj.values()):
                return json.dumps(obj)
            items = [f'{pad} {json.dumps(k)}: {enc(v, ind + 1)}' for k, v in obj.items()]
            return "{\n" + ",\n".join(items) + "\n" + pad + "}"
        if isinstance(obj, list) and (any(isinstance(x, (dict, list)) for x in obj) or len(json.dumps(obj)) > 200):
            items = [pad + " " + enc(x, ind + 1) for x in obj]
            return "[\n" + ",\n".join(items) + "\n" + pad + "]"
        return json.dumps(obj)
    return enc(doc, 0) + "\n"


NOTES = [
    "Names: '<module path relative to the stage>.<role>'. A storage is named after its role at the op that "
    "saved it (when the saved tensor spans the whole storage), else after the label it got where it was "
    "created, else after the role of a saved view; its other names are listed in 'aliases' (e.g. in fp32 "
    "Llama 'input_layernorm.input_fp32' is the stage input 'x' itself, because .to(float32) is a no-op).",
    "'shape' is the shape of a tensor spanning the storage (the saved view's shape for storages created "
    "inside ops, e.g. matmul's contiguous copies [B*A, S, D]); 'bytes' is the storage size.",
    "Dropout (torch 1.13, CPU): with 0 < p < 1, F.dropout computes input * (bernoulli(1-p) / (1-p)) and "
    "MulBackward0 saves that scaled noise, so '<dropout>.mask' has the INPUT's dtype and shape. On CUDA "
    "dropout goes through native_dropout, which saves a bool mask (1 byte per element, "
    "NativeDropoutBackward0.result1) instead. With p == 0 dropout returns its input unchanged: no mask, "
    "no new tensor ('*.probs_dropped' is then an alias of the probabilities).",
    "Mean (torch 1.13): MeanBackward1 saves its input, so RMSNorm's '<norm>.squared' (x.float().pow(2), "
    "fp32 [B,S,H]) is saved. Later PyTorch releases compute mean's backward from sizes only and do not save it.",
    "LayerNorm (CPU): native_layer_norm returns mean/rstd in the input dtype (bf16 for bf16 input); on "
    "CUDA they are float32 for bf16/fp16 input. Shape [B,S,1] either way.",
    "CPU autocast (torch 1.13, bf16) casts only the matmul family (addmm, mm, bmm, matmul, linear, baddbmm) "
    "to bf16 and runs cross_entropy/nll_loss in fp32; softmax, log_softmax and layer_norm follow their "
    "inputs (see cpu_autocast_observed). CUDA autocast also runs softmax/log_softmax/layer_norm in fp32, so "
    "with CUDA autocast GPT-2's 'attn.probs' would be fp32 and '.type(value.dtype)' a separate bf16 copy. "
    "Llama/GPT-NeoX call softmax(dtype=float32) explicitly and are not affected.",
    "Autocast caches casts only of leaf tensors that require grad (parameters); an activation used by several "
    "linears is cast once per use, so with bf16-mixed Llama saves three bf16 copies of the normalized input "
    "(q/k/v_proj.input) and two (gate/up_proj.input) in the MLP. The casts of parameters are listed under "
    "'excluded' ('<param>@bfloat16').",
    "With bf16-mixed, Llama/GPT-NeoX rotary cos/sin are float32 (computed from the fp32 inputs_embeds), so "
    "q/k after RoPE are float32, softmax(...).to(query.dtype) is a no-op, and the QK^T / PV matmuls save "
    "autocast bf16 copies of query, key and probabilities.",
    "matmul on 4-D inputs reshapes to 3-D for bmm: non-contiguous inputs (GPT-2's split/transposed q, k, v "
    "from c_attn, Llama's transposed v_proj output when kv_heads == heads) are copied and the copies are "
    "saved ('attn.query' etc., [B*A, S, D]); contiguous or batch-1 inputs are saved as views of their "
    "storage (GPT-2 with batch 1 saves the fused 'attn.qkv' [B,S,3H] storage once instead of three copies).",
    "Python floats multiplied into tensors (NewGELU constants, Llama/NeoX 'scores * scaling') are saved by "
    "MulBackward0 as 0-dim float64 CPU tensors; they are listed under 'excluded' (host memory). GPT-2's "
    "'attn.scale' = torch.full([], sqrt(head_dim)) is a real 0-dim tensor on the compute device and is "
    "counted (4 or 2 bytes; a CUDA caching allocator would round it to 512 bytes).",
    "GPT-2's causal mask is the module buffer 'attn.bias' (bool [1,1,P,P], P = max positions); "
    "WhereBackward0 saves a view of it. It is excluded: allocated once per model, not per step.",
    "'shared_input': true marks tensors computed once per model forward and shared by all layers (rotary "
    "cos/sin); they are not in total_bytes. 'model_input': true marks the token ids from the batch.",
    "Cases of qwen2, gemma, gemma2, phi3, mixtral, falcon (and the gpt_neox gelu_fast block) carry 'config', a "
    "Hugging Face config.json-style dict (model_type plus the keys the configuration class reads) describing "
    "the measured stage; mixtral cases also carry 'expert_tokens', how many tokens each expert received "
    "(routing is data-dependent, so per-expert shapes are too).",
    "Gemma/Gemma2 RMSNorm computes (x.float() * rstd) * (1.0 + weight.float()) in fp32 and casts last "
    "(.type_as(x)): it saves the fp32 normalized tensor '<norm>.normalized_fp32' [B,S,H] and the fp32 "
    "'<norm>.weight_plus_one' [H] (a new tensor every forward), where Llama's RMSNorm saves the normalized "
    "tensor in the input dtype. In fp32 / bf16-mixed the norm's output '.type_as(x)' is a no-op.",
    "Gemma's embedding stage multiplies by normalizer = torch.tensor(sqrt(H), dtype=hidden dtype), a real 0-dim "
    "tensor that MulBackward0 saves ('normalizer', 4 or 2 bytes); the embedding output itself is not saved.",
    "Gemma2 soft-capping (attention scores and final logits): x / cap, tanh, * cap. Only tanh's result is "
    "saved ('self_attn.scores_tanh' [B,A,S,S], 'logits_softcap.tanh' [B,S,V]) besides two float64 scalars.",
    "Phi-3's fused gate_up_proj output [B,S,2F] is one storage saved twice through views (silu's input = gate "
    "half, the mul's up half): 'mlp.gate_up_proj.output'. Its partial-rotary apply_rotary_pos_emb always "
    "concatenates (an empty pass-through with partial_rotary_factor 1), so q/k after RoPE are new tensors.",
    "Mixtral MoE (per-expert loop of transformers 4.5x): the router saves its input, the fp32 softmax result "
    "[N,E] and topk's int64 indices [N,k]; the in-place renormalisation 'routing_weights /= sum' saves a CLONE "
    "of the top-k values ('topk_weights_original', autograd copies self before an in-place op whose backward "
    "needs it) and the sum [N,1]. Per expert e with n_e tokens: torch.where's nonzero() result [n_e,2] int64 "
    "('experts.e.token_index', saved by both index ops and index_add_), the gathered tokens [n_e,H] "
    "(w1/w3 input), act input, act output, w3 output, w2 input [n_e,F], w2 output [n_e,H], the indexed "
    "routing weight [n_e,1] and the weighted output [n_e,H] (IndexAddBackward0.source). Only experts that "
    "received tokens run.",
    "Falcon multi-query (and new_decoder_architecture, whose _split_heads broadcasts k/v to all heads): "
    "'query_layer @ key_layer.transpose(-1,-2)' broadcasts the 1 (or kv-group) key heads over all heads, and "
    "matmul's expand + reshape materialises the broadcast: 'self_attention.key' and 'self_attention.value' "
    "are [B*A,...] copies, as large as with full multi-head attention. The list indices [-2] / [-1] of "
    "_split_heads become int64 index tensors saved by IndexBackward0 (8 bytes each). The eager rotary path "
    "runs softmax in hidden_states.dtype (bf16 in bf16, no fp32 upcast) and has no attention dropout; "
    "FalconLinear is 'input @ weight.T' then '+ bias', so with bias and CPU autocast the output is fp32 "
    "(bf16 matmul + fp32 bias) and the next linear saves an extra bf16 copy of it.",
]


if __name__ == "__main__":
    main()
