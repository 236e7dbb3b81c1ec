"""Hugging Face style eager modules (GPT-2, Llama, GPT-NeoX, Qwen2, Gemma, Gemma2, Phi-3, Mixtral,
Falcon), op for op.

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


class PytorchGELUTanh(nn.Module):
    """transformers.activations.PytorchGELUTanh ("gelu_pytorch_tanh"; GELUTanh in later releases):
    nn.functional.gelu(input, approximate="tanh")"""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def forward(self, input):
        with scope(self.path, {"GeluBackward0.self": f"{self.path}.input"}):
            return F.gelu(input, approximate="tanh")


class FastGELUActivation(nn.Module):
    """transformers.activations.FastGELUActivation ("gelu_fast"):
    0.5 * input * (1.0 + torch.tanh(input * 0.7978845608 * (1.0 + 0.044715 * input * input)))
    written out one op per line in Python's evaluation order (same ops)."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def forward(self, input):
        p = self.path
        with scalar_scope(f"{p}.scalar_0.5"):
            half = label(0.5 * input, f"{p}.half_input")
        with scalar_scope(f"{p}.scalar_0.7978845608"):
            scaled = label(input * 0.7978845608, f"{p}.input_scaled")
        with scalar_scope(f"{p}.scalar_0.044715"):
            sq_a = label(0.044715 * input, f"{p}.input_x_0.044715")
        with scope(f"{p}.square", {"MulBackward0.self": f"{p}.input_x_0.044715", "MulBackward0.other": f"{p}.input"}):
            sq = label(sq_a * input, f"{p}.square_scaled")
        poly = label(1.0 + sq, f"{p}.poly")
        with scope(f"{p}.mul_poly", {"MulBackward0.self": f"{p}.input_scaled", "MulBackward0.other": f"{p}.poly"}):
            inner = label(scaled * poly, f"{p}.inner")
        with scope(f"{p}.tanh", {"TanhBackward0.result": f"{p}.tanh"}):
            th = label(torch.tanh(inner), f"{p}.tanh")
        one_plus = label(1.0 + th, f"{p}.tanh_plus_one")
        with scope(f"{p}.mul_out", {"MulBackward0.self": f"{p}.half_input", "MulBackward0.other": f"{p}.tanh_plus_one"}):
            return half * one_plus


class SiLUActivation(nn.Module):
    """transformers.activations.SiLUActivation ("silu" / "swish") = nn.functional.silu"""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def forward(self, input):
        with scope(self.path, {"SiluBackward0.self": f"{self.path}.input"}):
            return F.silu(input)


def make_act(name, path):
    if name == "gelu_new":
        return NewGELUActivation(path)
    if name == "gelu":
        return GELUActivation(path)
    if name == "gelu_pytorch_tanh":
        return PytorchGELUTanh(path)
    if name == "gelu_fast":
        return FastGELUActivation(path)
    if name in ("silu", "swish"):
        return SiLUActivation(path)
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


def rope_eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, softcap=None,
                                 **kwargs):
    """llama's eager_attention_forward (gpt_neox's is the same without repeat_kv; gemma2's adds
    the attention-logit soft-capping `softcap`)."""
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
    if softcap is not None:
        # gemma2: attn_weights = attn_weights / softcap; torch.tanh(attn_weights); attn_weights * softcap
        with scope(f"{p}.softcap_div", {"DivBackward0.other": f"{p}.softcap_div_scalar"}):
            attn_weights = label(attn_weights / softcap, f"{p}.scores_div_cap")
        with scope(f"{p}.softcap_tanh", {"TanhBackward0.result": f"{p}.scores_tanh"}):
            attn_weights = label(torch.tanh(attn_weights), f"{p}.scores_tanh")
        with scalar_scope(f"{p}.softcap_mul_scalar"):
            attn_weights = label(attn_weights * softcap, f"{p}.scores_capped")
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
        # head_dim: getattr(config, "head_dim", None) or H // A (gemma, mixtral, qwen2 read it from the config)
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim ** -0.5
        if getattr(config, "query_pre_attn_scalar", None) is not None:  # gemma2
            self.scaling = config.query_pre_attn_scalar ** -0.5
        self.softcap = getattr(config, "attn_logit_softcapping", None)  # gemma2 (None elsewhere)
        self.attention_dropout = config.attention_dropout
        # llama/gemma: bias=config.attention_bias on all four; qwen2: q/k/v bias=True, o_proj bias=False
        attention_bias = getattr(config, "attention_bias", False)
        qkv_bias = getattr(config, "qkv_bias", attention_bias)
        o_bias = getattr(config, "o_bias", attention_bias)
        self.q_proj = nn.Linear(config.hidden_size, config.num_attention_heads * self.head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(config.num_attention_heads * self.head_dim, config.hidden_size, bias=o_bias)

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
            softcap=self.softcap,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        with linear_scope(f"{p}.o_proj"):
            attn_output = label(self.o_proj(attn_output), f"{p}.output")
        return attn_output, attn_weights


class LlamaMLP(nn.Module):
    def __init__(self, config, path, act=None):
        super().__init__()
        self.path = path
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        # transformers' LlamaMLP is always gated: act_fn = ACT2FN[config.hidden_act]
        # (gemma2 reads config.hidden_activation; the caller passes act= then)
        self.act_name = act or config.hidden_act
        if self.act_name == "silu":
            self.act_fn = nn.SiLU()
        else:
            self.act_fn = make_act(self.act_name, f"{path}.act")

    def forward(self, x):
        # down_proj = self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))
        p = self.path
        with linear_scope(f"{p}.gate_proj"):
            gate = label(self.gate_proj(x), f"{p}.act.input")
        if self.act_name == "silu":
            with scope(f"{p}.act", {"SiluBackward0.self": f"{p}.act.input"}):
                act = label(self.act_fn(gate), f"{p}.act.output")
        else:
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


# ---------------- Qwen2 ----------------
# modeling_qwen2.py: Qwen2Attention is LlamaAttention with q/k/v_proj bias=True and o_proj bias=False,
# head_dim = getattr(config, "head_dim", H // A); Qwen2MLP = LlamaMLP; Qwen2RMSNorm = LlamaRMSNorm. The
# sliding window (use_sliding_window, layers >= max_window_layers) only changes the mask that is passed in.


class Qwen2DecoderLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        config.qkv_bias, config.o_bias = True, False
        self.self_attn = LlamaAttention(config, "self_attn")
        self.mlp = LlamaMLP(config, "mlp")
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, "input_layernorm", eps=config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, "post_attention_layernorm",
                                                     eps=config.rms_norm_eps)

    forward = LlamaDecoderLayer.forward


# ---------------- Gemma / Gemma2 ----------------


class GemmaRMSNorm(nn.Module):
    """GemmaRMSNorm (also Gemma2RMSNorm): weight starts at 0 and is applied as (1 + weight) in fp32,
    the cast back to the input dtype comes last:
        output = self._norm(x.float())          # x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        output = output * (1.0 + self.weight.float())
        return output.type_as(x)"""

    def __init__(self, dim, path, eps=1e-6):
        super().__init__()
        self.path = path
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        p = self.path
        xf = label(x.float(), f"{p}.input_fp32")
        with scope(f"{p}.pow", {"PowBackward0.self": f"{p}.input_fp32"}):
            squared = label(xf.pow(2), f"{p}.squared")
        with scope(f"{p}.mean", {"MeanBackward1.self": f"{p}.squared"}):
            variance = label(squared.mean(-1, keepdim=True), f"{p}.variance")
        var_eps = label(variance + self.eps, f"{p}.variance_eps")
        with scope(f"{p}.rsqrt", {"RsqrtBackward0.result": f"{p}.rstd"}):
            rstd = label(torch.rsqrt(var_eps), f"{p}.rstd")
        with scope(f"{p}.mul_rstd", {"MulBackward0.self": f"{p}.input_fp32", "MulBackward0.other": f"{p}.rstd"}):
            output = label(xf * rstd, f"{p}.normalized_fp32")
        w = label(self.weight.float(), f"{p}.weight_fp32")
        w1 = label(1.0 + w, f"{p}.weight_plus_one")
        with scope(f"{p}.mul_weight", {"MulBackward0.self": f"{p}.normalized_fp32",
                                       "MulBackward0.other": f"{p}.weight_plus_one"}):
            output = label(output * w1, f"{p}.scaled_fp32")
        return output.type_as(x)


class GemmaDecoderLayer(nn.Module):
    """GemmaDecoderLayer = LlamaDecoderLayer with GemmaRMSNorm, head_dim from the config (256 for
    gemma-7b, 16 heads x 256 = 4096 != hidden 3072), bias=config.attention_bias on q/k/v/o and a gated
    MLP with act_fn = ACT2FN[config.hidden_act] ("gelu_pytorch_tanh")."""

    def __init__(self, config):
        super().__init__()
        self.self_attn = LlamaAttention(config, "self_attn")
        self.mlp = LlamaMLP(config, "mlp")
        self.input_layernorm = GemmaRMSNorm(config.hidden_size, "input_layernorm", eps=config.rms_norm_eps)
        self.post_attention_layernorm = GemmaRMSNorm(config.hidden_size, "post_attention_layernorm",
                                                     eps=config.rms_norm_eps)

    forward = LlamaDecoderLayer.forward


class Gemma2DecoderLayer(nn.Module):
    """Gemma2DecoderLayer: four norms (pre/post attention, pre/post feed-forward); attention scaled by
    query_pre_attn_scalar ** -0.5 with attention-logit soft-capping; MLP act = ACT2FN[config.hidden_activation].
    Sliding-window layers (every other one) differ only in the mask passed in."""

    def __init__(self, config):
        super().__init__()
        H, eps = config.hidden_size, config.rms_norm_eps
        self.self_attn = LlamaAttention(config, "self_attn")
        self.mlp = LlamaMLP(config, "mlp", act=config.hidden_activation)
        self.input_layernorm = GemmaRMSNorm(H, "input_layernorm", eps=eps)
        self.post_attention_layernorm = GemmaRMSNorm(H, "post_attention_layernorm", eps=eps)
        self.pre_feedforward_layernorm = GemmaRMSNorm(H, "pre_feedforward_layernorm", eps=eps)
        self.post_feedforward_layernorm = GemmaRMSNorm(H, "post_feedforward_layernorm", eps=eps)

    def forward(self, hidden_states, attention_mask, position_embeddings):
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states, _ = self.self_attn(hidden_states=hidden_states, position_embeddings=position_embeddings,
                                          attention_mask=attention_mask)
        hidden_states = label(self.post_attention_layernorm(hidden_states), "post_attention_layernorm.output")
        hidden_states = label(residual + hidden_states, "pre_feedforward_layernorm.input")
        residual = hidden_states
        hidden_states = self.pre_feedforward_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        hidden_states = self.post_feedforward_layernorm(hidden_states)
        hidden_states = label(residual + hidden_states, "output")
        return hidden_states


def gemma_scale_embeddings(inputs_embeds, hidden_size):
    """GemmaModel / Gemma2Model.forward: the embeddings times a 0-dim tensor normalizer in the hidden dtype
        normalizer = torch.tensor(self.config.hidden_size**0.5, dtype=hidden_states.dtype)
        hidden_states = hidden_states * normalizer
    (sqrt(3072) = 55.4256 becomes 55.5 in bf16). MulBackward0 saves the normalizer (2 or 4 bytes)."""
    normalizer = label(torch.tensor(hidden_size ** 0.5, dtype=inputs_embeds.dtype), "normalizer")
    with scope("normalizer_mul", {"MulBackward0.other": "normalizer"}):
        return inputs_embeds * normalizer


def logit_softcap(logits, cap):
    """Gemma2ForCausalLM.forward, before the loss:
        logits = logits / self.config.final_logit_softcapping
        logits = torch.tanh(logits)
        logits = logits * self.config.final_logit_softcapping"""
    with scope("logits_softcap.div", {"DivBackward0.other": "logits_softcap.div_scalar"}):
        logits = label(logits / cap, "logits_softcap.divided")
    with scope("logits_softcap.tanh", {"TanhBackward0.result": "logits_softcap.tanh"}):
        logits = label(torch.tanh(logits), "logits_softcap.tanh")
    with scalar_scope("logits_softcap.mul_scalar"):
        logits = label(logits * cap, "logits_softcap.output")
    return logits


# ---------------- Phi-3 ----------------


def phi3_apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    """modeling_phi3.apply_rotary_pos_emb: partial rotary, the pass-through part concatenated back
    (an empty slice with partial_rotary_factor 1.0, but the cat still makes a new tensor)."""
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    rotary_dim = cos.shape[-1]
    q_rot, q_pass = q[..., :rotary_dim], q[..., rotary_dim:]
    k_rot, k_pass = k[..., :rotary_dim], k[..., rotary_dim:]
    q_embed = torch.cat([(q_rot * cos) + (rotate_half(q_rot) * sin), q_pass], dim=-1)
    k_embed = torch.cat([(k_rot * cos) + (rotate_half(k_rot) * sin), k_pass], dim=-1)
    return q_embed, k_embed


class Phi3Attention(nn.Module):
    def __init__(self, config, path):
        super().__init__()
        self.path = path
        self.config = config
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.scaling = self.head_dim ** -0.5
        self.attention_dropout = config.attention_dropout
        op_size = config.num_attention_heads * self.head_dim + 2 * (config.num_key_value_heads * self.head_dim)
        self.o_proj = nn.Linear(config.num_attention_heads * self.head_dim, config.hidden_size, bias=False)
        self.qkv_proj = nn.Linear(config.hidden_size, op_size, bias=False)

    def forward(self, hidden_states, position_embeddings, attention_mask):
        p = self.path
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        with linear_scope(f"{p}.qkv_proj"):
            qkv = label(self.qkv_proj(hidden_states), f"{p}.qkv")
        query_pos = self.config.num_attention_heads * self.head_dim
        query_states = qkv[..., :query_pos]
        key_states = qkv[..., query_pos: query_pos + self.num_key_value_heads * self.head_dim]
        value_states = qkv[..., query_pos + self.num_key_value_heads * self.head_dim:]
        query_states = query_states.view(hidden_shape).transpose(1, 2)
        key_states = key_states.view(hidden_shape).transpose(1, 2)
        value_states = value_states.view(hidden_shape).transpose(1, 2)

        cos, sin = position_embeddings
        with rope_scope(p):
            query_states, key_states = phi3_apply_rotary_pos_emb(query_states, key_states, cos, sin)
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


class Phi3MLP(nn.Module):
    """up_states = gate_up_proj(x); gate, up_states = up_states.chunk(2, dim=-1);
    up_states = up_states * activation_fn(gate); return down_proj(up_states)"""

    def __init__(self, config, path):
        super().__init__()
        self.path = path
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act_name = config.hidden_act
        self.activation_fn = make_act(config.hidden_act, f"{path}.act")

    def forward(self, hidden_states):
        p = self.path
        with linear_scope(f"{p}.gate_up_proj"):
            up_states = label(self.gate_up_proj(hidden_states), f"{p}.gate_up_proj.output")
        gate, up_states = up_states.chunk(2, dim=-1)
        act = label(self.activation_fn(gate), f"{p}.act.output")
        with scope(f"{p}.gate_mul", {"MulBackward0.self": f"{p}.up", "MulBackward0.other": f"{p}.act.output"}):
            up_states = label(up_states * act, f"{p}.down_proj.input")
        with linear_scope(f"{p}.down_proj"):
            return label(self.down_proj(up_states), f"{p}.output")


class Phi3DecoderLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.self_attn = Phi3Attention(config, "self_attn")
        self.mlp = Phi3MLP(config, "mlp")
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, "input_layernorm", eps=config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, "post_attention_layernorm",
                                                     eps=config.rms_norm_eps)
        self.resid_attn_dropout = nn.Dropout(config.resid_pdrop)
        self.resid_mlp_dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden_states, attention_mask, position_embeddings):
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states, _ = self.self_attn(hidden_states=hidden_states, position_embeddings=position_embeddings,
                                          attention_mask=attention_mask)
        with dropout_scope("resid_attn_dropout"):
            dropped = label(self.resid_attn_dropout(hidden_states), "resid_attn_dropout.output")
        hidden_states = label(residual + dropped, "post_attention_layernorm.input")
        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        with dropout_scope("resid_mlp_dropout"):
            dropped = label(self.resid_mlp_dropout(hidden_states), "resid_mlp_dropout.output")
        return label(residual + dropped, "output")


# ---------------- Mixtral ----------------


class MixtralBlockSparseTop2MLP(nn.Module):
    def __init__(self, config, path):
        super().__init__()
        self.path = path
        self.w1 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.w2 = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.w3 = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.act_name = config.hidden_act
        self.act_fn = make_act(config.hidden_act, f"{path}.act")

    def forward(self, hidden_states):
        # current_hidden_states = self.act_fn(self.w1(hidden_states)) * self.w3(hidden_states)
        # current_hidden_states = self.w2(current_hidden_states)
        p = self.path
        with linear_scope(f"{p}.w1"):
            h1 = label(self.w1(hidden_states), f"{p}.act.input")
        act = label(self.act_fn(h1), f"{p}.act.output")
        with linear_scope(f"{p}.w3"):
            h3 = label(self.w3(hidden_states), f"{p}.w3.output")
        with scope(f"{p}.gate_mul", {"MulBackward0.self": f"{p}.act.output", "MulBackward0.other": f"{p}.w3.output"}):
            cur = label(act * h3, f"{p}.w2.input")
        with linear_scope(f"{p}.w2"):
            return label(self.w2(cur), f"{p}.w2.output")


class MixtralSparseMoeBlock(nn.Module):
    """The per-expert loop of transformers 4.5x (modeling_mixtral.py at 00d4b3d2): router linear,
    softmax in fp32, topk, renormalize in place, cast back, then for every expert that got tokens:
    torch.where on its one-hot mask, index the tokens, expert MLP, times the routing weight, index_add_.
    After each forward, `expert_tokens` holds how many tokens each expert received."""

    def __init__(self, config, path):
        super().__init__()
        self.path = path
        self.hidden_dim = config.hidden_size
        self.num_experts = config.num_local_experts
        self.top_k = config.num_experts_per_tok
        self.gate = nn.Linear(self.hidden_dim, self.num_experts, bias=False)
        self.experts = nn.ModuleList([MixtralBlockSparseTop2MLP(config, f"{path}.experts.{e}")
                                      for e in range(self.num_experts)])
        self.jitter_noise = config.router_jitter_noise
        self.expert_tokens = None

    def forward(self, hidden_states):
        p = self.path
        batch_size, sequence_length, hidden_dim = hidden_states.shape
        if self.training and self.jitter_noise > 0:
            hidden_states *= torch.empty_like(hidden_states).uniform_(1.0 - self.jitter_noise, 1.0 + self.jitter_noise)
        hidden_states = hidden_states.view(-1, hidden_dim)
        # router_logits: (batch * sequence_length, n_experts)
        with linear_scope(f"{p}.gate"):
            router_logits = label(self.gate(hidden_states), f"{p}.router_logits")

        with scope(f"{p}.router_softmax", {"SoftmaxBackward0.result": f"{p}.routing_probs"}):
            routing_weights = label(F.softmax(router_logits, dim=1, dtype=torch.float), f"{p}.routing_probs")
        with scope(f"{p}.topk", {"TopkBackward0.indices": f"{p}.selected_experts"}):
            routing_weights, selected_experts = torch.topk(routing_weights, self.top_k, dim=-1)
        label(routing_weights, f"{p}.topk_weights")
        label(selected_experts, f"{p}.selected_experts")
        denom = label(routing_weights.sum(dim=-1, keepdim=True), f"{p}.topk_sum")
        with scope(f"{p}.renormalize", {"DivBackward0.other": f"{p}.topk_sum", "DivBackward0.self": f"{p}.topk_weights_original",
                                        "DivBackward0.result": f"{p}.routing_weights_fp32"}):
            routing_weights /= denom
        label(routing_weights, f"{p}.routing_weights_fp32")
        # we cast back to the input dtype
        routing_weights = label(routing_weights.to(hidden_states.dtype), f"{p}.routing_weights")

        final_hidden_states = torch.zeros((batch_size * sequence_length, hidden_dim), dtype=hidden_states.dtype,
                                          device=hidden_states.device)
        expert_mask = torch.nn.functional.one_hot(selected_experts, num_classes=self.num_experts).permute(2, 1, 0)
        self.expert_tokens = [int(n) for n in expert_mask.sum(dim=(-1, -2))]

        expert_hit = torch.greater(expert_mask.sum(dim=(-1, -2)), 0).nonzero()
        for expert_idx in expert_hit:
            e = int(expert_idx)
            ep = f"{p}.experts.{e}"
            expert_layer = self.experts[expert_idx]
            idx, top_x = torch.where(expert_mask[expert_idx].squeeze(0))
            label(top_x, f"{ep}.token_index")  # idx and top_x: two columns of one nonzero() result
            with scope(f"{ep}.gather", {"IndexBackward0.indices": f"{ep}.token_index"}):
                current_state = label(hidden_states[None, top_x].reshape(-1, hidden_dim), f"{ep}.input")
            out = expert_layer(current_state)
            with scope(f"{ep}.routing_index", {"IndexBackward0.indices": f"{ep}.token_index"}):
                weight = label(routing_weights[top_x, idx, None], f"{ep}.routing_weight")
            with scope(f"{ep}.routing_mul", {"MulBackward0.self": f"{ep}.w2.output",
                                             "MulBackward0.other": f"{ep}.routing_weight"}):
                current_hidden_states = label(out * weight, f"{ep}.weighted_output")
            with scope(f"{ep}.index_add", {"IndexAddBackward0.index": f"{ep}.token_index",
                                           "IndexAddBackward0.source": f"{ep}.weighted_output"}):
                final_hidden_states.index_add_(0, top_x, current_hidden_states.to(hidden_states.dtype))
        final_hidden_states = final_hidden_states.reshape(batch_size, sequence_length, hidden_dim)
        return final_hidden_states, router_logits


class MixtralDecoderLayer(nn.Module):
    """MixtralDecoderLayer; Qwen2MoeDecoderLayer differs in the sparse block and its name."""
    moe_name, moe_cls = "block_sparse_moe", None  # moe_cls: MixtralSparseMoeBlock (defined above)

    def __init__(self, config):
        super().__init__()
        self.self_attn = LlamaAttention(config, "self_attn")
        setattr(self, self.moe_name, (self.moe_cls or MixtralSparseMoeBlock)(config, self.moe_name))
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
        hidden_states, _ = getattr(self, self.moe_name)(hidden_states)
        hidden_states = label(residual + hidden_states, "output")
        return hidden_states


class Qwen2MoeSparseMoeBlock(nn.Module):
    """Qwen2MoeSparseMoeBlock (modeling_qwen2_moe.py): Mixtral's router and per-expert loop, except
    that the top-k weights are renormalized only with norm_topk_prob, the experts are Qwen2MoeMLPs
    (gate_proj / up_proj / down_proj of moe_intermediate_size), and a shared expert of
    shared_expert_intermediate_size runs on every token, scaled by sigmoid(shared_expert_gate(x)):
        shared_expert_output = self.shared_expert(hidden_states)
        shared_expert_output = F.sigmoid(self.shared_expert_gate(hidden_states)) * shared_expert_output
        final_hidden_states = final_hidden_states + shared_expert_output
    After each forward, `expert_tokens` holds how many tokens each expert received."""

    def __init__(self, config, path):
        super().__init__()
        self.path = path
        self.hidden_dim = config.hidden_size
        self.num_experts = config.num_experts
        self.top_k = config.num_experts_per_tok
        self.norm_topk_prob = config.norm_topk_prob
        self.gate = nn.Linear(self.hidden_dim, self.num_experts, bias=False)
        expert_cfg = Cfg(**{**config.__dict__, "intermediate_size": config.moe_intermediate_size})
        self.experts = nn.ModuleList([LlamaMLP(expert_cfg, f"{path}.experts.{e}") for e in range(self.num_experts)])
        shared_cfg = Cfg(**{**config.__dict__, "intermediate_size": config.shared_expert_intermediate_size})
        self.shared_expert = LlamaMLP(shared_cfg, f"{path}.shared_expert")
        self.shared_expert_gate = nn.Linear(self.hidden_dim, 1, bias=False)
        self.expert_tokens = None

    def forward(self, hidden_states):
        p = self.path
        batch_size, sequence_length, hidden_dim = hidden_states.shape
        hidden_states = hidden_states.view(-1, hidden_dim)
        with linear_scope(f"{p}.gate"):
            router_logits = label(self.gate(hidden_states), f"{p}.router_logits")
        with scope(f"{p}.router_softmax", {"SoftmaxBackward0.result": f"{p}.routing_probs"}):
            routing_weights = label(F.softmax(router_logits, dim=1, dtype=torch.float), f"{p}.routing_probs")
        with scope(f"{p}.topk", {"TopkBackward0.indices": f"{p}.selected_experts"}):
            routing_weights, selected_experts = torch.topk(routing_weights, self.top_k, dim=-1)
        label(routing_weights, f"{p}.topk_weights")
        label(selected_experts, f"{p}.selected_experts")
        if self.norm_topk_prob:
            denom = label(routing_weights.sum(dim=-1, keepdim=True), f"{p}.topk_sum")
            with scope(f"{p}.renormalize", {"DivBackward0.other": f"{p}.topk_sum",
                                            "DivBackward0.self": f"{p}.topk_weights_original",
                                            "DivBackward0.result": f"{p}.routing_weights_fp32"}):
                routing_weights /= denom
            label(routing_weights, f"{p}.routing_weights_fp32")
        routing_weights = label(routing_weights.to(hidden_states.dtype), f"{p}.routing_weights")

        final_hidden_states = torch.zeros((batch_size * sequence_length, hidden_dim), dtype=hidden_states.dtype,
                                          device=hidden_states.device)
        expert_mask = torch.nn.functional.one_hot(selected_experts, num_classes=self.num_experts).permute(2, 1, 0)
        self.expert_tokens = [int(n) for n in expert_mask.sum(dim=(-1, -2))]
        expert_hitted = (expert_mask.sum(dim=(-1, -2)) > 0).nonzero(as_tuple=True)[0].tolist()
        for expert_idx in expert_hitted:
            ep = f"{p}.experts.{expert_idx}"
            expert_layer = self.experts[expert_idx]
            idx, top_x = torch.where(expert_mask[expert_idx])
            label(top_x, f"{ep}.token_index")  # idx and top_x: two columns of one nonzero() result
            with scope(f"{ep}.gather", {"IndexBackward0.indices": f"{ep}.token_index"}):
                current_state = label(hidden_states[None, top_x].reshape(-1, hidden_dim), f"{ep}.input")
            out = expert_layer(current_state)
            with scope(f"{ep}.routing_index", {"IndexBackward0.indices": f"{ep}.token_index"}):
                weight = label(routing_weights[top_x, idx, None], f"{ep}.routing_weight")
            with scope(f"{ep}.routing_mul", {"MulBackward0.self": f"{ep}.down_proj.output",
                                             "MulBackward0.other": f"{ep}.routing_weight"}):
                current_hidden_states = label(out * weight, f"{ep}.weighted_output")
            with scope(f"{ep}.index_add", {"IndexAddBackward0.index": f"{ep}.token_index",
                                           "IndexAddBackward0.source": f"{ep}.weighted_output"}):
                final_hidden_states.index_add_(0, top_x, current_hidden_states.to(hidden_states.dtype))

        shared_expert_output = self.shared_expert(hidden_states)
        with linear_scope(f"{p}.shared_expert_gate"):
            gate_logit = label(self.shared_expert_gate(hidden_states), f"{p}.shared_expert_gate.output")
        with scope(f"{p}.shared_expert_gate.sigmoid", {"SigmoidBackward0.result": f"{p}.shared_expert_gate.sigmoid"}):
            # F.sigmoid in transformers: the same op and SigmoidBackward0 (F.sigmoid only warns)
            gate = label(torch.sigmoid(gate_logit), f"{p}.shared_expert_gate.sigmoid")
        with scope(f"{p}.shared_mul", {"MulBackward0.self": f"{p}.shared_expert_gate.sigmoid",
                                       "MulBackward0.other": f"{p}.shared_expert.down_proj.output"}):
            shared_expert_output = label(gate * shared_expert_output, f"{p}.shared_expert_output")
        final_hidden_states = final_hidden_states + shared_expert_output
        final_hidden_states = final_hidden_states.reshape(batch_size, sequence_length, hidden_dim)
        return final_hidden_states, router_logits


class Qwen2MoeDecoderLayer(MixtralDecoderLayer):
    """Qwen2MoeDecoderLayer with every layer sparse (decoder_sparse_step 1, no mlp_only_layers):
    qwen2's attention (q/k/v biases), RMSNorms, and Qwen2MoeSparseMoeBlock as `mlp`."""
    moe_name, moe_cls = "mlp", Qwen2MoeSparseMoeBlock

    def __init__(self, config):
        config.qkv_bias, config.o_bias = True, False
        super().__init__(config)


# ---------------- Falcon ----------------


class FalconLinear(nn.Linear):
    """hidden_states = input @ self.weight.T; + self.bias if any (matmul and bias not fused)."""

    def forward(self, input):
        hidden_states = input @ self.weight.T
        if self.bias is None:
            return hidden_states
        return hidden_states + self.bias


def falcon_linear_scope(path):
    return scope(path, {"MmBackward0.self": f"{path}.input", "BmmBackward0.self": f"{path}.input"})


def dropout_add(x, residual, prob, training, path):
    """modeling_falcon.dropout_add: out = F.dropout(x, p=prob, training=training); residual + out"""
    with dropout_scope(path):
        out = label(F.dropout(x, p=prob, training=training), f"{path}.output")
    out = residual + out
    return out


class FalconAttention(nn.Module):
    """FalconAttention, rotary (alibi=False), eager (config._attn_implementation == "eager") path."""

    def __init__(self, config, path):
        super().__init__()
        self.path = path
        self.config = config
        self.hidden_size = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = self.hidden_size // self.num_heads
        self.split_size = self.hidden_size
        self.inv_norm_factor = 1.0 / math.sqrt(self.head_dim)
        if config.new_decoder_architecture:
            qkv_out_dim = (config.num_kv_heads * 2 + config.num_attention_heads) * self.head_dim
        elif config.multi_query:
            qkv_out_dim = self.hidden_size + 2 * self.head_dim
        else:
            qkv_out_dim = 3 * self.hidden_size
        self.query_key_value = FalconLinear(self.hidden_size, qkv_out_dim, bias=config.bias)
        self.new_decoder_architecture = config.new_decoder_architecture
        self.multi_query = config.multi_query
        self.dense = FalconLinear(self.hidden_size, self.hidden_size, bias=config.bias)
        self.attention_dropout = nn.Dropout(config.attention_dropout)  # used on the alibi path only
        self.num_kv_heads = config.num_kv_heads if (self.new_decoder_architecture or not self.multi_query) else 1

    def _split_heads(self, fused_qkv):
        p = self.path
        if self.new_decoder_architecture:
            batch, seq_len, _ = fused_qkv.shape
            qkv = fused_qkv.view(batch, seq_len, -1, self.num_heads // self.num_kv_heads + 2, self.head_dim)
            query = qkv[:, :, :, :-2]
            with scope(f"{p}.split_key", {"IndexBackward0.indices": f"{p}.key_index"}):
                key = qkv[:, :, :, [-2]]
            with scope(f"{p}.split_value", {"IndexBackward0.indices": f"{p}.value_index"}):
                value = qkv[:, :, :, [-1]]
            key = torch.broadcast_to(key, query.shape)
            value = torch.broadcast_to(value, query.shape)
            query, key, value = [x.flatten(2, 3) for x in (query, key, value)]
            return query, key, value
        elif not self.multi_query:
            batch_size, seq_length, three_times_hidden_size = fused_qkv.shape
            fused_qkv = fused_qkv.view(batch_size, seq_length, self.num_heads, 3, self.head_dim)
            return fused_qkv[..., 0, :], fused_qkv[..., 1, :], fused_qkv[..., 2, :]
        else:
            batch_size, seq_length, three_times_hidden_size = fused_qkv.shape
            fused_qkv = fused_qkv.view(batch_size, seq_length, self.num_heads + 2, self.head_dim)
            # (the list indices [-2] / [-1] become int64 index tensors that IndexBackward0 saves)
            with scope(f"{p}.split_key", {"IndexBackward0.indices": f"{p}.key_index"}):
                key = fused_qkv[..., [-2], :]
            with scope(f"{p}.split_value", {"IndexBackward0.indices": f"{p}.value_index"}):
                value = fused_qkv[..., [-1], :]
            return fused_qkv[..., :-2, :], key, value

    def forward(self, hidden_states, attention_mask, position_embeddings):
        p = self.path
        with falcon_linear_scope(f"{p}.query_key_value"):
            fused_qkv = label(self.query_key_value(hidden_states), f"{p}.qkv")
        num_kv_heads = self.num_heads if self.new_decoder_architecture else self.num_kv_heads
        query_layer, key_layer, value_layer = self._split_heads(fused_qkv)
        batch_size, query_length, _, _ = query_layer.shape
        query_layer = query_layer.transpose(1, 2).reshape(batch_size, self.num_heads, query_length, self.head_dim)
        key_layer = key_layer.transpose(1, 2).reshape(batch_size, num_kv_heads, query_length, self.head_dim)
        value_layer = value_layer.transpose(1, 2).reshape(batch_size, num_kv_heads, query_length, self.head_dim)
        label(value_layer, f"{p}.value_heads")

        cos, sin = position_embeddings
        with rope_scope(p):
            query_layer, key_layer = llama_apply_rotary_pos_emb(query_layer, key_layer, cos, sin)
        label(query_layer, f"{p}.query_rope")
        label(key_layer, f"{p}.key_rope")

        kv_length = key_layer.shape[-2]
        if attention_mask is not None:
            attention_mask = attention_mask[:, :, :, : key_layer.shape[-2]]

        with scope(f"{p}.qk_matmul", {"BmmBackward0.self": f"{p}.query", "BmmBackward0.mat2": f"{p}.key",
                                      "MmBackward0.self": f"{p}.query", "MmBackward0.mat2": f"{p}.key"}):
            attention_scores = label(query_layer @ key_layer.transpose(-1, -2), f"{p}.scores")
        with scope(f"{p}.scale_div", {"DivBackward0.other": f"{p}.inv_norm_scalar"}):
            attention_scores /= math.sqrt(self.head_dim)  # in place on the matmul output
        masked = label(attention_scores + attention_mask, f"{p}.scores_masked")
        with scope(f"{p}.softmax", {"SoftmaxBackward0.result": f"{p}.probs"}):
            attention_scores = label(F.softmax(masked, dim=-1, dtype=hidden_states.dtype), f"{p}.probs")
        # (no dropout and no head_mask on the rotary path)
        with scope(f"{p}.pv_matmul", {"BmmBackward0.self": f"{p}.pv_probs", "BmmBackward0.mat2": f"{p}.value",
                                      "MmBackward0.self": f"{p}.pv_probs", "MmBackward0.mat2": f"{p}.value"}):
            attn_output = label(attention_scores @ value_layer, f"{p}.context")
        attn_output = attn_output.view(batch_size, self.num_heads, query_length, self.head_dim)
        attn_output = attn_output.permute(0, 2, 1, 3)
        attn_output = attn_output.reshape(batch_size, query_length, self.num_heads * self.head_dim)
        with falcon_linear_scope(f"{p}.dense"):
            attn_output = label(self.dense(attn_output), f"{p}.output")
        return attn_output, None


class FalconMLP(nn.Module):
    def __init__(self, config, path):
        super().__init__()
        self.path = path
        self.dense_h_to_4h = FalconLinear(config.hidden_size, config.ffn_hidden_size, bias=config.bias)
        self.act = make_act(config.activation, f"{path}.act")
        self.dense_4h_to_h = FalconLinear(config.ffn_hidden_size, config.hidden_size, bias=config.bias)

    def forward(self, x):
        p = self.path
        with falcon_linear_scope(f"{p}.dense_h_to_4h"):
            x = label(self.dense_h_to_4h(x), f"{p}.act.input")
        x = label(self.act(x), f"{p}.act.output")
        with falcon_linear_scope(f"{p}.dense_4h_to_h"):
            x = label(self.dense_4h_to_h(x), f"{p}.output")
        return x


class FalconDecoderLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        hidden_size = config.hidden_size
        self.self_attention = FalconAttention(config, "self_attention")
        self.mlp = FalconMLP(config, "mlp")
        self.config = config
        # (transformers writes this back into the shared config)
        if config.num_ln_in_parallel_attn is None and config.new_decoder_architecture:
            config.num_ln_in_parallel_attn = 2
        eps = config.layer_norm_epsilon
        if not config.parallel_attn:
            self.post_attention_layernorm = nn.LayerNorm(hidden_size, eps=eps)
            self.input_layernorm = nn.LayerNorm(hidden_size, eps=eps)
        else:
            if config.num_ln_in_parallel_attn == 2:
                self.ln_attn = nn.LayerNorm(hidden_size, eps=eps)
                self.ln_mlp = nn.LayerNorm(hidden_size, eps=eps)
            else:
                self.input_layernorm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(self, hidden_states, attention_mask, position_embeddings):
        c = self.config
        residual = hidden_states
        if c.new_decoder_architecture and c.num_ln_in_parallel_attn == 2:
            with layer_norm_scope("ln_attn"):
                attention_layernorm_out = label(self.ln_attn(hidden_states), "ln_attn.output")
            with layer_norm_scope("ln_mlp"):
                mlp_layernorm_out = label(self.ln_mlp(hidden_states), "ln_mlp.output")
        else:
            with layer_norm_scope("input_layernorm"):
                attention_layernorm_out = label(self.input_layernorm(hidden_states), "input_layernorm.output")

        attention_output, _ = self.self_attention(attention_layernorm_out, attention_mask=attention_mask,
                                                  position_embeddings=position_embeddings)

        if not c.new_decoder_architecture:
            if c.parallel_attn:
                mlp_layernorm_out = attention_layernorm_out
            else:
                residual = label(dropout_add(attention_output, residual, c.attention_dropout, self.training,
                                             "attn_dropout_add"), "post_attention_layernorm.input")
                with layer_norm_scope("post_attention_layernorm"):
                    mlp_layernorm_out = label(self.post_attention_layernorm(residual),
                                              "post_attention_layernorm.output")
        if c.new_decoder_architecture and c.parallel_attn and c.num_ln_in_parallel_attn == 1:
            mlp_layernorm_out = attention_layernorm_out

        mlp_output = self.mlp(mlp_layernorm_out)
        if c.new_decoder_architecture or c.parallel_attn:
            mlp_output += attention_output
        output = label(dropout_add(mlp_output, residual, c.hidden_dropout, self.training, "mlp_dropout_add"), "output")
        return output


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

    def __init__(self, hidden, vocab, name, final_logit_softcapping=None):
        super().__init__()
        self.name = name
        self.vocab = vocab
        self.final_logit_softcapping = final_logit_softcapping  # gemma2
        setattr(self, name, nn.Linear(hidden, vocab, bias=False))

    def forward(self, hidden_states, labels):
        head = getattr(self, self.name)
        logits_to_keep = 0
        slice_indices = slice(-logits_to_keep, None)
        with linear_scope(self.name):
            logits = label(head(hidden_states[:, slice_indices, :]), "logits")
        if self.final_logit_softcapping is not None:
            logits = logit_softcap(logits, self.final_logit_softcapping)
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


# ---------------- PEFT's LoRA ----------------


class LoraLinear(nn.Module):
    """peft.tuners.lora.layer.Linear as it runs a vanilla LoRA adapter: the frozen base layer (an
    nn.Linear, FalconLinear or GPT-2's Conv1D), lora_A (in -> r) and lora_B (r -> out) bias-free
    nn.Linears in fp32 (PEFT's autocast_adapter_dtype), nn.Dropout or nn.Identity for p = 0, and

        result = self.base_layer(x); torch_result_dtype = result.dtype
        x = self._cast_input_dtype(x, lora_A.weight.dtype)
        result = result + lora_B(lora_A(dropout(x))) * scaling
        result = result.to(torch_result_dtype)

    with scaling = alpha / r. lora_B starts at zero (PEFT's init), lora_A Kaiming-uniform."""

    def __init__(self, base, r, alpha, dropout):
        super().__init__()
        self.base_layer = base
        if isinstance(base, Conv1D):
            in_f, out_f = base.weight.shape
        else:
            in_f, out_f = base.in_features, base.out_features
        self.lora_A = nn.Linear(in_f, r, bias=False, dtype=torch.float32)
        self.lora_B = nn.Linear(r, out_f, bias=False, dtype=torch.float32)
        nn.init.zeros_(self.lora_B.weight)
        self.lora_dropout = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()
        self.scaling = alpha / r

    disabled = False  # PEFT's disable_adapter(): the base layer alone (DPO's reference)

    def forward(self, x):
        if LoraLinear.disabled:
            return self.base_layer(x)
        result = self.base_layer(x)
        torch_result_dtype = result.dtype
        if x.dtype != self.lora_A.weight.dtype:
            x = x.to(dtype=self.lora_A.weight.dtype)
        result = result + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling
        return result.to(torch_result_dtype)


def apply_lora(model, blocks, targets, r, alpha, dropout):
    """PEFT's get_peft_model for LoRA: every parameter of the model frozen, then each module of the
    blocks whose attribute name is in `targets` (PEFT matches the last component of the module's path)
    wrapped in a LoraLinear. Returns the number of modules wrapped."""
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = 0
    for block in blocks:
        for parent in list(block.modules()):
            for name, child in list(parent.named_children()):
                if name in targets and isinstance(child, (nn.Linear, Conv1D)):
                    setattr(parent, name, LoraLinear(child, r, alpha, dropout))
                    wrapped += 1
    return wrapped


# ---------------- DPO ----------------


def get_batch_logps(logits, labels):
    """eric-mitchell/direct-preference-optimization trainers.py _get_batch_logps
    (average_log_prob=False)."""
    labels = labels[:, 1:].clone()
    logits = logits[:, :-1, :]
    loss_mask = (labels != -100)
    labels[labels == -100] = 0
    per_token_logps = torch.gather(logits.log_softmax(-1), dim=2, index=labels.unsqueeze(2)).squeeze(2)
    return (per_token_logps * loss_mask).sum(-1)


def concatenated_forward(model, input_ids):
    """trainers.py concatenated_forward: chosen and rejected already concatenated (2B sequences)."""
    all_logits = model.logits(input_ids).to(torch.float32)
    all_logps = get_batch_logps(all_logits, input_ids)
    B = input_ids.shape[0] // 2
    return all_logps[:B], all_logps[B:]


def preference_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta=0.1):
    """trainers.py preference_loss, the sigmoid (DPO) loss."""
    pi_logratios = policy_chosen - policy_rejected
    ref_logratios = reference_chosen - reference_rejected
    logits = pi_logratios - ref_logratios
    return -F.logsigmoid(beta * logits)


# ---------------- transformers' Adafactor ----------------


class Adafactor(torch.optim.Optimizer):
    """transformers.optimization.Adafactor's step with its defaults (beta1=None: no first moment;
    relative_step, scale_parameter), which decide its memory: a matrix's second moment factored into
    exp_avg_sq_row and exp_avg_sq_col, a vector's kept whole, in the gradient's dtype; state["RMS"]
    a 0-dim tensor; and per parameter, at most two fp32 tensors of its size at once."""

    def __init__(self, params, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=-0.8):
        super().__init__(params, {"eps": eps, "clip_threshold": clip_threshold, "decay_rate": decay_rate})

    @staticmethod
    def _rms(tensor):
        return tensor.norm(2) / (tensor.numel() ** 0.5)

    @staticmethod
    def _approx_sq_grad(exp_avg_sq_row, exp_avg_sq_col):
        r_factor = (exp_avg_sq_row / exp_avg_sq_row.mean(dim=-1, keepdim=True)).rsqrt_().unsqueeze(-1)
        c_factor = exp_avg_sq_col.unsqueeze(-2).rsqrt()
        return torch.mul(r_factor, c_factor)

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.dtype in {torch.float16, torch.bfloat16}:
                    grad = grad.float()
                state = self.state[p]
                grad_shape = grad.shape
                factored = len(grad_shape) >= 2
                if len(state) == 0:
                    state["step"] = 0
                    if factored:
                        state["exp_avg_sq_row"] = torch.zeros(grad_shape[:-1]).to(grad)
                        state["exp_avg_sq_col"] = torch.zeros(grad_shape[:-2] + grad_shape[-1:]).to(grad)
                    else:
                        state["exp_avg_sq"] = torch.zeros_like(grad)
                    state["RMS"] = 0
                p_data_fp32 = p
                if p.dtype in {torch.float16, torch.bfloat16}:
                    p_data_fp32 = p_data_fp32.float()
                state["step"] += 1
                state["RMS"] = self._rms(p_data_fp32)
                rel_step_sz = min(1e-2, 1.0 / math.sqrt(state["step"]))
                lr = max(group["eps"][1], state["RMS"]) * rel_step_sz
                beta2t = 1.0 - math.pow(state["step"], group["decay_rate"])
                update = (grad**2) + group["eps"][0]
                if factored:
                    exp_avg_sq_row = state["exp_avg_sq_row"]
                    exp_avg_sq_col = state["exp_avg_sq_col"]
                    exp_avg_sq_row.mul_(beta2t).add_(update.mean(dim=-1), alpha=(1.0 - beta2t))
                    exp_avg_sq_col.mul_(beta2t).add_(update.mean(dim=-2), alpha=(1.0 - beta2t))
                    update = self._approx_sq_grad(exp_avg_sq_row, exp_avg_sq_col)
                    update.mul_(grad)
                else:
                    exp_avg_sq = state["exp_avg_sq"]
                    exp_avg_sq.mul_(beta2t).add_(update, alpha=(1.0 - beta2t))
                    update = exp_avg_sq.rsqrt().mul_(grad)
                update.div_((self._rms(update) / group["clip_threshold"]).clamp_(min=1.0))
                update.mul_(lr)
                p_data_fp32.add_(-update)
                if p.dtype in {torch.float16, torch.bfloat16}:
                    p.copy_(p_data_fp32)
