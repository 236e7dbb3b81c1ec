"""Hugging Face style eager modules (GPT-2, Llama, GPT-NeoX), op for op.

They mirror the eager code paths of recent transformers (v4.48+: modeling_gpt2.py,
modeling_llama.py, modeling_gpt_neox.py and loss_utils.ForCausalLMLoss), because what
autograd saves and what a training step allocates depend on exactly which intermediate
tensors exist. transformers itself is not needed.

Two programs use them: measure_saved_tensors.py (which tensors each stage saves) and
measure_step.py (the live bytes of whole training steps). The calls to label() and scope()
name tensors for the first; they do nothing unless a tracker is installed with
set_tracker().
"""

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class NullTracker:
    """The tracker when no measurement names tensors: label() and scope() are no-ops."""

    def label(self, t, name, **kw):
        return t

    def scope(self, name, mapping=None):
        return contextlib.nullcontext()


T = NullTracker()


def set_tracker(tracker):
    """Installs the tracker that label() and scope() report to (None: no tracker)."""
    global T
    T = tracker if tracker is not None else NullTracker()

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


def randomize_params(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, prm in sorted(module.named_parameters()):
            if prm.dim() >= 2:
                prm.copy_(torch.randn(prm.shape, generator=g) * 0.02)
            else:
                prm.copy_(1.0 + 0.1 * torch.randn(prm.shape, generator=g) if prm.shape[0] > 0 else prm)
