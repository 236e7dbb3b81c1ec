#!/usr/bin/env python3
"""Measure which tensors PyTorch autograd saves for backward in Hugging Face
style eager transformer stages (GPT-2, Llama, GPT-NeoX).

Regenerate the committed test data with:

    /usr/bin/python3 tests/data/measure_saved_tensors.py > tests/data/hf_eager_saved.json

The modules below mirror the eager code paths in recent Hugging Face transformers
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

REGEN_COMMAND = "/usr/bin/python3 tests/data/measure_saved_tensors.py > tests/data/hf_eager_saved.json"

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


def label(t, name, **kw):
    return T.label(t, name, **kw)


def scope(name, mapping=None):
    return T.scope(name, mapping)


def linear_scope(path):
    """Scope for a Linear / Conv1D call: names its saved input (also an autocast
    cast of it, which a label at creation cannot reach)."""
    return scope(
        path,
        {
            "AddmmBackward0.mat1": f"{path}.input",
            "MmBackward0.self": f"{path}.input",
            "MatmulBackward0.self": f"{path}.input",
            "LinearBackward0.input": f"{path}.input",
        },
    )


def scalar_scope(name):
    """tensor * python_float: MulBackward0 saves the float as a 0-dim float64
    wrapped-number tensor."""
    return scope(name, {"MulBackward0.other": name})


def dropout_scope(path):
    return scope(
        path,
        {
            "MulBackward0.other": f"{path}.mask",
            "NativeDropoutBackward0.result1": f"{path}.mask",
        },
    )


def layer_norm_scope(path):
    return scope(
        path,
        {
            "NativeLayerNormBackward0.result1": f"{path}.mean",
            "NativeLayerNormBackward0.result2": f"{path}.rstd",
        },
    )


# --------------------------------------------------------------------------
# Hugging Face style modules (eager)
# --------------------------------------------------------------------------


class Cfg:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class Conv1D(nn.Module):
    """transformers.pytorch_utils.Conv1D"""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x):
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        x = x.view(size_out)
        return x


class NewGELUActivation(nn.Module):
    """transformers.activations.NewGELUActivation ("gelu_new"):
    0.5 * input * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (input + 0.044715 * torch.pow(input, 3.0))))
    written out one op per line in Python's evaluation order (same ops)."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def forward(self, input):
        p = self.path
        # (a Python float multiplied into a tensor is saved by MulBackward0 as a
        # 0-dim float64 "wrapped number" tensor)
        with scalar_scope(f"{p}.scalar_0.5"):
            half = label(0.5 * input, f"{p}.half_input")
        cube = label(torch.pow(input, 3.0), f"{p}.cube")
        with scalar_scope(f"{p}.scalar_0.044715"):
            cube_scaled = label(0.044715 * cube, f"{p}.cube_scaled")
        inner = label(input + cube_scaled, f"{p}.inner")
        with scalar_scope(f"{p}.scalar_sqrt_2_over_pi"):
            inner_scaled = label(math.sqrt(2.0 / math.pi) * inner, f"{p}.inner_scaled")
        th = label(torch.tanh(inner_scaled), f"{p}.tanh")
        one_plus = label(1.0 + th, f"{p}.tanh_plus_one")
        return half * one_plus


class GELUActivation(nn.Module):
    """transformers.activations.GELUActivation ("gelu") = nn.functional.gelu"""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def forward(self, input):
        with scope(self.path, {"GeluBackward0.self": f"{self.path}.input"}):
            return F.gelu(input)


def make_act(name, path):
    if name == "gelu_new":
        return NewGELUActivation(path)
    if name == "gelu":
        return GELUActivation(path)
    raise ValueError(name)


# ---------------- GPT-2 ----------------


def gpt2_eager_attention_forward(module, query, key, value, attention_mask, head_mask=None, **kwargs):
    p = module.path
    with scope(f"{p}.qk_matmul", {"BmmBackward0.self": f"{p}.query", "BmmBackward0.mat2": f"{p}.key",
                                  "MmBackward0.self": f"{p}.query", "MmBackward0.mat2": f"{p}.key"}):
        attn_weights = label(torch.matmul(query, key.transpose(-1, -2)), f"{p}.scores")

    if module.scale_attn_weights:
        scale = label(torch.full([], value.size(-1) ** 0.5, dtype=attn_weights.dtype, device=attn_weights.device),
                      f"{p}.scale")
        with scope(f"{p}.scale_div", {"DivBackward0.other": f"{p}.scale"}):
            attn_weights = label(attn_weights / scale, f"{p}.scores_scaled")

    if module.scale_attn_by_inverse_layer_idx:
        attn_weights = attn_weights / float(module.layer_idx + 1)

    if not module.is_cross_attention:
        query_length, key_length = query.size(-2), key.size(-2)
        causal_mask = module.bias[:, :, key_length - query_length : key_length, :key_length]
        mask_value = torch.finfo(attn_weights.dtype).min
        mask_value = label(torch.full([], mask_value, dtype=attn_weights.dtype, device=attn_weights.device),
                           f"{p}.mask_value")
        with scope(f"{p}.causal_where", {"WhereBackward0.condition": f"{p}.causal_mask"}):
            attn_weights = label(torch.where(causal_mask, attn_weights.to(attn_weights.dtype), mask_value),
                                 f"{p}.scores_masked")

    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask

    with scope(f"{p}.softmax", {"SoftmaxBackward0.result": f"{p}.probs"}):
        attn_weights = label(torch.nn.functional.softmax(attn_weights, dim=-1), f"{p}.probs")

    # Downcast (if necessary) back to V's dtype (if in mixed-precision) -- No-Op otherwise
    attn_weights = label(attn_weights.type(value.dtype), f"{p}.probs_lowp")
    with dropout_scope(f"{p}.attn_dropout"):
        attn_weights = label(module.attn_dropout(attn_weights), f"{p}.probs_dropped")

    if head_mask is not None:
        attn_weights = attn_weights * head_mask

    with scope(f"{p}.pv_matmul", {"BmmBackward0.self": f"{p}.probs_dropped", "BmmBackward0.mat2": f"{p}.value",
                                  "MmBackward0.self": f"{p}.probs_dropped", "MmBackward0.mat2": f"{p}.value"}):
        attn_output = label(torch.matmul(attn_weights, value), f"{p}.context")
    attn_output = attn_output.transpose(1, 2)
    return attn_output, attn_weights


class GPT2Attention(nn.Module):
    def __init__(self, config, path, layer_idx=0):
        super().__init__()
        self.path = path
        max_positions = config.max_position_embeddings
        self.register_buffer(
            "bias",
            torch.tril(torch.ones((max_positions, max_positions), dtype=torch.bool)).view(
                1, 1, max_positions, max_positions
            ),
            persistent=False,
        )
        self.register_buffer("masked_bias", torch.tensor(-1e4), persistent=False)
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.split_size = self.embed_dim
        self.scale_attn_weights = True
        self.is_cross_attention = False
        self.scale_attn_by_inverse_layer_idx = False
        self.layer_idx = layer_idx
        self.reorder_and_upcast_attn = False
        self.c_attn = Conv1D(3 * self.embed_dim, self.embed_dim)
        self.c_proj = Conv1D(self.embed_dim, self.embed_dim)
        self.attn_dropout = nn.Dropout(config.attn_pdrop)
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden_states, attention_mask=None, head_mask=None):
        p = self.path
        with linear_scope(f"{p}.c_attn"):
            qkv = label(self.c_attn(hidden_states), f"{p}.qkv")
        query_states, key_states, value_states = qkv.split(self.split_size, dim=2)
        shape_q = (*query_states.shape[:-1], -1, self.head_dim)
        shape_kv = (*key_states.shape[:-1], -1, self.head_dim)
        query_states = query_states.view(shape_q).transpose(1, 2)
        key_states = key_states.view(shape_kv).transpose(1, 2)
        value_states = value_states.view(shape_kv).transpose(1, 2)

        attn_output, attn_weights = gpt2_eager_attention_forward(
            self, query_states, key_states, value_states, attention_mask, head_mask=head_mask
        )
        attn_output = attn_output.reshape(*attn_output.shape[:-2], -1).contiguous()
        with linear_scope(f"{p}.c_proj"):
            attn_output = label(self.c_proj(attn_output), f"{p}.c_proj.output")
        with dropout_scope(f"{p}.resid_dropout"):
            attn_output = label(self.resid_dropout(attn_output), f"{p}.output")
        return attn_output, None


class GPT2MLP(nn.Module):
    def __init__(self, intermediate_size, config, path):
        super().__init__()
        self.path = path
        embed_dim = config.hidden_size
        self.c_fc = Conv1D(intermediate_size, embed_dim)
        self.c_proj = Conv1D(embed_dim, intermediate_size)
        self.act = make_act(config.activation_function, f"{path}.act")
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden_states):
        p = self.path
        with linear_scope(f"{p}.c_fc"):
            hidden_states = label(self.c_fc(hidden_states), f"{p}.act.input")
        hidden_states = self.act(hidden_states)
        with linear_scope(f"{p}.c_proj"):
            hidden_states = label(self.c_proj(hidden_states), f"{p}.c_proj.output")
        with dropout_scope(f"{p}.dropout"):
            hidden_states = label(self.dropout(hidden_states), f"{p}.output")
        return hidden_states


class GPT2Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        hidden_size = config.hidden_size
        inner_dim = config.n_inner if config.n_inner is not None else 4 * hidden_size
        self.ln_1 = nn.LayerNorm(hidden_size, eps=config.layer_norm_epsilon)
        self.attn = GPT2Attention(config, "attn")
        self.ln_2 = nn.LayerNorm(hidden_size, eps=config.layer_norm_epsilon)
        self.mlp = GPT2MLP(inner_dim, config, "mlp")

    def forward(self, hidden_states, attention_mask=None):
        residual = hidden_states
        with layer_norm_scope("ln_1"):
            hidden_states = self.ln_1(hidden_states)
        attn_output, _ = self.attn(hidden_states, attention_mask=attention_mask)
        # residual connection
        hidden_states = label(attn_output + residual, "ln_2.input")
        residual = hidden_states
        with layer_norm_scope("ln_2"):
            hidden_states = self.ln_2(hidden_states)
        feed_forward_hidden_states = self.mlp(hidden_states)
        hidden_states = label(residual + feed_forward_hidden_states, "output")
        return hidden_states


class GPT2Embeddings(nn.Module):
    """The embedding part of GPT2Model.forward: wte + wpe, then drop."""

    def __init__(self, config):
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        self.wpe = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.drop = nn.Dropout(config.embd_pdrop)

    def forward(self, input_ids):
        input_shape = input_ids.size()
        input_ids = input_ids.view(-1, input_shape[-1])
        past_length = 0
        cache_position = torch.arange(past_length, past_length + input_shape[-1], device=input_ids.device)
        position_ids = label(cache_position.unsqueeze(0), "position_ids")
        with scope("wte", {"EmbeddingBackward0.indices": "input_ids"}):
            inputs_embeds = label(self.wte(input_ids), "wte.output")
        with scope("wpe", {"EmbeddingBackward0.indices": "position_ids"}):
            position_embeds = label(self.wpe(position_ids), "wpe.output")
        hidden_states = label(inputs_embeds + position_embeds.to(inputs_embeds.device), "drop.input")
        with dropout_scope("drop"):
            hidden_states = label(self.drop(hidden_states), "output")
        return hidden_states


# ---------------- Llama ----------------


class LlamaRMSNorm(nn.Module):
    def __init__(self, hidden_size, path, eps=1e-6):
        super().__init__()
        self.path = path
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        p = self.path
        input_dtype = hidden_states.dtype
        hidden_states = label(hidden_states.to(torch.float32), f"{p}.input_fp32")
        with scope(f"{p}.pow", {"PowBackward0.self": f"{p}.input_fp32"}):
            squared = label(hidden_states.pow(2), f"{p}.squared")
        with scope(f"{p}.mean", {"MeanBackward1.self": f"{p}.squared"}):
            variance = label(squared.mean(-1, keepdim=True), f"{p}.variance")
        var_eps = label(variance + self.variance_epsilon, f"{p}.variance_eps")
        with scope(f"{p}.rsqrt", {"RsqrtBackward0.result": f"{p}.rstd"}):
            rstd = label(torch.rsqrt(var_eps), f"{p}.rstd")
        with scope(f"{p}.mul_rstd", {"MulBackward0.self": f"{p}.input_fp32", "MulBackward0.other": f"{p}.rstd"}):
            hidden_states = label(hidden_states * rstd, f"{p}.normalized_fp32")
        normalized = label(hidden_states.to(input_dtype), f"{p}.normalized")
        with scope(f"{p}.mul_weight", {"MulBackward0.other": f"{p}.normalized"}):
            return self.weight * normalized


class LlamaRotaryEmbedding(nn.Module):
    """Default rope; computed once per model forward from inputs_embeds."""

    def __init__(self, dim, base=10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.attention_scaling = 1.0

    @torch.no_grad()
    def forward(self, x, position_ids):
        inv_freq_expanded = self.inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1).to(x.device)
        position_ids_expanded = position_ids[:, None, :].float()
        with torch.autocast(device_type="cpu", enabled=False):
            freqs = (inv_freq_expanded.float() @ position_ids_expanded.float()).transpose(1, 2)
            emb = torch.cat((freqs, freqs), dim=-1)
            cos = emb.cos() * self.attention_scaling
            sin = emb.sin() * self.attention_scaling
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def llama_apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    return q_embed, k_embed


def repeat_kv(hidden_states, n_rep):
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


def rope_eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """llama's eager_attention_forward (gpt_neox's is the same without repeat_kv)."""
    p = module.path
    n_rep = getattr(module, "num_key_value_groups", 1)
    key_states = repeat_kv(key, n_rep)
    value_states = repeat_kv(value, n_rep)
    if n_rep > 1:
        label(key_states, f"{p}.key_repeated")
        label(value_states, f"{p}.value_repeated")

    with scope(f"{p}.qk_matmul", {"BmmBackward0.self": f"{p}.query", "BmmBackward0.mat2": f"{p}.key",
                                  "MmBackward0.self": f"{p}.query", "MmBackward0.mat2": f"{p}.key"}):
        scores = label(torch.matmul(query, key_states.transpose(2, 3)), f"{p}.scores")
    with scalar_scope(f"{p}.scaling_scalar"):
        attn_weights = label(scores * scaling, f"{p}.scores_scaled")
    if attention_mask is not None:
        causal_mask = attention_mask[:, :, :, : key_states.shape[-2]]
        attn_weights = label(attn_weights + causal_mask, f"{p}.scores_masked")

    with scope(f"{p}.softmax", {"SoftmaxBackward0.result": f"{p}.probs"}):
        attn_weights = label(nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32), f"{p}.probs")
    attn_weights = label(attn_weights.to(query.dtype), f"{p}.probs_lowp")
    with dropout_scope(f"{p}.dropout"):
        attn_weights = label(nn.functional.dropout(attn_weights, p=dropout, training=module.training),
                             f"{p}.probs_dropped")
    with scope(f"{p}.pv_matmul", {"BmmBackward0.self": f"{p}.probs_dropped", "BmmBackward0.mat2": f"{p}.value",
                                  "MmBackward0.self": f"{p}.probs_dropped", "MmBackward0.mat2": f"{p}.value"}):
        attn_output = label(torch.matmul(attn_weights, value_states), f"{p}.context")
    attn_output = attn_output.transpose(1, 2).contiguous()
    return attn_output, attn_weights


def rope_scope(path):
    return scope(f"{path}.rope")


class LlamaAttention(nn.Module):
    def __init__(self, config, path):
        super().__init__()
        self.path = path
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim ** -0.5
        self.attention_dropout = config.attention_dropout
        self.q_proj = nn.Linear(config.hidden_size, config.num_attention_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(config.num_attention_heads * self.head_dim, config.hidden_size, bias=False)

    def forward(self, hidden_states, position_embeddings, attention_mask):
        p = self.path
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        with linear_scope(f"{p}.q_proj"):
            q = label(self.q_proj(hidden_states), f"{p}.q_proj.output")
        with linear_scope(f"{p}.k_proj"):
            k = label(self.k_proj(hidden_states), f"{p}.k_proj.output")
        with linear_scope(f"{p}.v_proj"):
            v = label(self.v_proj(hidden_states), f"{p}.v_proj.output")
        query_states = q.view(hidden_shape).transpose(1, 2)
        key_states = k.view(hidden_shape).transpose(1, 2)
        value_states = v.view(hidden_shape).transpose(1, 2)

        cos, sin = position_embeddings
        with rope_scope(p):
            query_states, key_states = llama_apply_rotary_pos_emb(query_states, key_states, cos, sin)
        label(query_states, f"{p}.query_rope")
        label(key_states, f"{p}.key_rope")

        attn_output, attn_weights = rope_eager_attention_forward(
            self, query_states, key_states, value_states, attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout, scaling=self.scaling,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        with linear_scope(f"{p}.o_proj"):
            attn_output = label(self.o_proj(attn_output), f"{p}.output")
        return attn_output, attn_weights


class LlamaMLP(nn.Module):
    def __init__(self, config, path):
        super().__init__()
        self.path = path
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        assert config.hidden_act == "silu"
        self.act_fn = nn.SiLU()

    def forward(self, x):
        # down_proj = self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))
        p = self.path
        with linear_scope(f"{p}.gate_proj"):
            gate = label(self.gate_proj(x), f"{p}.act.input")
        with scope(f"{p}.act", {"SiluBackward0.self": f"{p}.act.input"}):
            act = label(self.act_fn(gate), f"{p}.act.output")
        with linear_scope(f"{p}.up_proj"):
            up = label(self.up_proj(x), f"{p}.up_proj.output")
        with scope(f"{p}.gate_mul", {"MulBackward0.self": f"{p}.act.output", "MulBackward0.other": f"{p}.up_proj.output"}):
            prod = label(act * up, f"{p}.down_proj.input")
        with linear_scope(f"{p}.down_proj"):
            down_proj = label(self.down_proj(prod), f"{p}.output")
        return down_proj


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.self_attn = LlamaAttention(config, "self_attn")
        self.mlp = LlamaMLP(config, "mlp")
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, "input_layernorm", eps=config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, "post_attention_layernorm",
                                                     eps=config.rms_norm_eps)

    def forward(self, hidden_states, attention_mask, position_embeddings):
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states, _ = self.self_attn(hidden_states=hidden_states, position_embeddings=position_embeddings,
                                          attention_mask=attention_mask)
        hidden_states = label(residual + hidden_states, "post_attention_layernorm.input")
        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        hidden_states = label(residual + hidden_states, "output")
        return hidden_states


# ---------------- GPT-NeoX ----------------


def neox_apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    # Keep half or full tensor for later concatenation
    rotary_dim = cos.shape[-1]
    q_rot, q_pass = q[..., :rotary_dim], q[..., rotary_dim:]
    k_rot, k_pass = k[..., :rotary_dim], k[..., rotary_dim:]
    # Apply rotary embeddings on the first half or full tensor
    q_embed = (q_rot * cos) + (rotate_half(q_rot) * sin)
    k_embed = (k_rot * cos) + (rotate_half(k_rot) * sin)
    # Concatenate back to full shape
    q_embed = torch.cat([q_embed, q_pass], dim=-1)
    k_embed = torch.cat([k_embed, k_pass], dim=-1)
    return q_embed, k_embed


class GPTNeoXAttention(nn.Module):
    def __init__(self, config, path):
        super().__init__()
        self.path = path
        self.head_size = config.hidden_size // config.num_attention_heads
        self.attention_dropout = config.attention_dropout
        self.rotary_ndims = int(self.head_size * config.rotary_pct)
        self.scaling = self.head_size ** -0.5
        self.query_key_value = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=True)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=True)

    def forward(self, hidden_states, attention_mask, position_embeddings):
        p = self.path
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, 3 * self.head_size)
        with linear_scope(f"{p}.query_key_value"):
            qkv = label(self.query_key_value(hidden_states), f"{p}.qkv")
        qkv = qkv.view(hidden_shape).transpose(1, 2)
        query_states, key_states, value_states = qkv.chunk(3, dim=-1)

        cos, sin = position_embeddings
        with rope_scope(p):
            query_states, key_states = neox_apply_rotary_pos_emb(query_states, key_states, cos, sin)
        label(query_states, f"{p}.query_rope")
        label(key_states, f"{p}.key_rope")

        attn_output, attn_weights = rope_eager_attention_forward(
            self, query_states, key_states, value_states, attention_mask,
            scaling=self.scaling, dropout=0.0 if not self.training else self.attention_dropout,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        with linear_scope(f"{p}.dense"):
            attn_output = label(self.dense(attn_output), f"{p}.output")
        return attn_output, attn_weights


class GPTNeoXMLP(nn.Module):
    def __init__(self, config, path):
        super().__init__()
        self.path = path
        self.dense_h_to_4h = nn.Linear(config.hidden_size, config.intermediate_size)
        self.dense_4h_to_h = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = make_act(config.hidden_act, f"{path}.act")

    def forward(self, hidden_states):
        p = self.path
        with linear_scope(f"{p}.dense_h_to_4h"):
            hidden_states = label(self.dense_h_to_4h(hidden_states), f"{p}.act.input")
        hidden_states = self.act(hidden_states)
        with linear_scope(f"{p}.dense_4h_to_h"):
            hidden_states = label(self.dense_4h_to_h(hidden_states), f"{p}.output")
        return hidden_states


class GPTNeoXLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.use_parallel_residual = config.use_parallel_residual
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_attention_dropout = nn.Dropout(config.hidden_dropout)
        self.post_mlp_dropout = nn.Dropout(config.hidden_dropout)
        self.attention = GPTNeoXAttention(config, "attention")
        self.mlp = GPTNeoXMLP(config, "mlp")

    def forward(self, hidden_states, attention_mask, position_embeddings):
        with layer_norm_scope("input_layernorm"):
            ln_out = self.input_layernorm(hidden_states)
        attn_output, _ = self.attention(ln_out, attention_mask=attention_mask,
                                        position_embeddings=position_embeddings)
        with dropout_scope("post_attention_dropout"):
            attn_output = label(self.post_attention_dropout(attn_output), "post_attention_dropout.output")
        if self.use_parallel_residual:
            # x = x + attn(ln1(x)) + mlp(ln2(x))
            with layer_norm_scope("post_attention_layernorm"):
                ln2_out = self.post_attention_layernorm(hidden_states)
            mlp_output = self.mlp(ln2_out)
            with dropout_scope("post_mlp_dropout"):
                mlp_output = label(self.post_mlp_dropout(mlp_output), "post_mlp_dropout.output")
            hidden_states = label(mlp_output + attn_output + hidden_states, "output")
        else:
            attn_output = label(attn_output + hidden_states, "post_attention_layernorm.input")
            with layer_norm_scope("post_attention_layernorm"):
                ln2_out = self.post_attention_layernorm(attn_output)
            mlp_output = self.mlp(ln2_out)
            with dropout_scope("post_mlp_dropout"):
                mlp_output = label(self.post_mlp_dropout(mlp_output), "post_mlp_dropout.output")
            hidden_states = label(mlp_output + attn_output, "output")
        return hidden_states


# ---------------- heads and loss ----------------


def for_causal_lm_loss(logits, labels, vocab_size, ignore_index=-100):
    """transformers.loss.loss_utils.ForCausalLMLoss (num_items_in_batch=None,
    shift_labels=None) + fixed_cross_entropy."""
    # Upcast to float if we need to compute the loss to avoid potential precision issues
    logits = label(logits.float(), "logits_fp32")
    # Shift so that tokens < n predict n
    labels = label(nn.functional.pad(labels, (0, 1), value=ignore_index), "loss.labels_padded")
    shift_labels = label(labels[..., 1:].contiguous(), "loss.target")
    # Flatten the tokens
    logits = logits.view(-1, vocab_size)
    shift_labels = shift_labels.view(-1)
    shift_labels = shift_labels.to(logits.device)
    with scope("loss", {"LogSoftmaxBackward0.result": "loss.log_softmax",
                        "NllLossBackward0.self": "loss.log_softmax",
                        "NllLossBackward0.target": "loss.target",
                        "NllLossBackward0.total_weight": "loss.total_weight"}):
        loss = nn.functional.cross_entropy(logits, shift_labels, ignore_index=ignore_index, reduction="mean")
    return loss


class CausalLMHead(nn.Module):
    """lm_head (GPT2LMHeadModel.lm_head, LlamaForCausalLM.lm_head,
    GPTNeoXForCausalLM.embed_out) followed by self.loss_function."""

    def __init__(self, hidden, vocab, name):
        super().__init__()
        self.name = name
        self.vocab = vocab
        setattr(self, name, nn.Linear(hidden, vocab, bias=False))

    def forward(self, hidden_states, labels):
        head = getattr(self, self.name)
        logits_to_keep = 0
        slice_indices = slice(-logits_to_keep, None)
        with linear_scope(self.name):
            logits = label(head(hidden_states[:, slice_indices, :]), "logits")
        loss = for_causal_lm_loss(logits, labels, self.vocab)
        return loss


# --------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------

PRECISIONS = {
    # name: (module/input dtype, autocast dtype or None)
    "fp32": (torch.float32, None),
    "bf16": (torch.bfloat16, None),
    "bf16-mixed": (torch.float32, torch.bfloat16),
}


def randomize_params(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, prm in sorted(module.named_parameters()):
            if prm.dim() >= 2:
                prm.copy_(torch.randn(prm.shape, generator=g) * 0.02)
            else:
                prm.copy_(1.0 + 0.1 * torch.randn(prm.shape, generator=g) if prm.shape[0] > 0 else prm)


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
            excluded.append({"name": f"{copy_of}@{dtype_name(t.dtype)}",
                             "reason": f"autocast {dtype_name(t.dtype)} copy of parameter '{copy_of}' "
                                       f"(weight memory held by the autocast cache, not an activation)",
                             **entry_base})
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
    ctx = (torch.autocast("cpu", dtype=autocast_dtype) if autocast_dtype is not None
           else contextlib.nullcontext())
    with ctx:
        outputs = run(module, dtype)
    tensors, total, excluded = analyse(module, outputs)
    case["tensors"] = tensors
    case["total_bytes"] = total
    case["excluded"] = excluded
    T = None
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
]


if __name__ == "__main__":
    main()
