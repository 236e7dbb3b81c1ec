"""Whole Hugging Face style causal LMs built from a config.json, out of hf_modules' blocks.

GPT2LMHeadModel, LlamaForCausalLM (also model_type mistral) and GPTNeoXForCausalLM as
transformers (v4.48+) lay them out: the same attribute paths (transformer.h, model.layers,
gpt_neox.layers, lm_head / embed_out), the same forward (embeddings, the causal mask and rotary
cos/sin made once per forward, the blocks in a loop, the final norm, the head, ForCausalLMLoss),
and the same defaults for absent keys as remat's reader (planner/config/model.cpp,
from_hf_config), so that both sides read one file the same way.
"""

import torch
import torch.nn as nn

from hf_modules import (Cfg, GPT2Block, GPT2Embeddings, GPTNeoXLayer, LlamaDecoderLayer, LlamaRMSNorm,
                        LlamaRotaryEmbedding, for_causal_lm_loss, randomize_params)  # noqa: F401 (re-exported)


def causal_mask(B, S, dtype):
    """The float mask transformers builds once per forward for eager attention (llama, gpt_neox):
    0 where attended, finfo(dtype).min above the diagonal, [B, 1, S, S] (an expanded view)."""
    min_dtype = torch.finfo(dtype).min
    mask = torch.full((S, S), min_dtype, dtype=dtype).triu(1)
    return mask[None, None].expand(B, 1, S, S)


class GPT2Model(GPT2Embeddings):
    def __init__(self, c):
        super().__init__(c)
        self.h = nn.ModuleList([GPT2Block(c) for _ in range(c.n_layer)])
        self.ln_f = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_epsilon)

    def forward(self, input_ids):
        hidden_states = super().forward(input_ids)
        for block in self.h:
            hidden_states = block(hidden_states)
        return self.ln_f(hidden_states)


class CausalLM(nn.Module):
    """body (transformers' base model) + head (a bias-free V x H linear, tied to the body's
    embedding when the config says so) + ForCausalLMLoss, under transformers' attribute names."""

    body_name, head_name, embedding_name, final_norm_name = "", "", "", ""

    def __init__(self, c, body):
        super().__init__()
        self.config = c
        setattr(self, self.body_name, body)
        setattr(self, self.head_name, nn.Linear(c.hidden_size, c.vocab_size, bias=False))
        if c.tie_word_embeddings:
            getattr(self, self.head_name).weight = getattr(body, self.embedding_name).weight

    def final_norm(self):
        return getattr(getattr(self, self.body_name), self.final_norm_name)

    def forward(self, input_ids, labels):
        hidden_states = getattr(self, self.body_name)(input_ids)
        logits = getattr(self, self.head_name)(hidden_states)
        return for_causal_lm_loss(logits, labels, self.config.vocab_size)


class GPT2LMHeadModel(CausalLM):
    body_name, head_name, embedding_name, final_norm_name = "transformer", "lm_head", "wte", "ln_f"

    def __init__(self, c):
        super().__init__(c, GPT2Model(c))


class LlamaModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList([LlamaDecoderLayer(c) for _ in range(c.num_hidden_layers)])
        self.norm = LlamaRMSNorm(c.hidden_size, "norm", eps=c.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(c.hidden_size // c.num_attention_heads, base=c.rope_theta)

    def forward(self, input_ids):
        inputs_embeds = self.embed_tokens(input_ids)
        B, S = input_ids.shape
        position_ids = torch.arange(S).unsqueeze(0)
        mask = causal_mask(B, S, inputs_embeds.dtype)
        position_embeddings = self.rotary_emb(inputs_embeds, position_ids)
        hidden_states = inputs_embeds
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask=mask, position_embeddings=position_embeddings)
        return self.norm(hidden_states)


class LlamaForCausalLM(CausalLM):
    body_name, head_name, embedding_name, final_norm_name = "model", "lm_head", "embed_tokens", "norm"

    def __init__(self, c):
        super().__init__(c, LlamaModel(c))


class GPTNeoXModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_in = nn.Embedding(c.vocab_size, c.hidden_size)
        self.emb_dropout = nn.Dropout(c.hidden_dropout)
        self.layers = nn.ModuleList([GPTNeoXLayer(c) for _ in range(c.num_hidden_layers)])
        self.final_layer_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        head = c.hidden_size // c.num_attention_heads
        self.rotary_emb = LlamaRotaryEmbedding(int(head * c.rotary_pct), base=c.rotary_emb_base)

    def forward(self, input_ids):
        inputs_embeds = self.embed_in(input_ids)
        B, S = input_ids.shape
        position_ids = torch.arange(S).unsqueeze(0)
        mask = causal_mask(B, S, inputs_embeds.dtype)
        hidden_states = self.emb_dropout(inputs_embeds)
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask=mask, position_embeddings=position_embeddings)
        return self.final_layer_norm(hidden_states)


class GPTNeoXForCausalLM(CausalLM):
    body_name, head_name, embedding_name, final_norm_name = "gpt_neox", "embed_out", "embed_in", "final_layer_norm"

    def __init__(self, c):
        super().__init__(c, GPTNeoXModel(c))


def _get(j, key, default):
    v = j.get(key)
    return default if v is None else v


def config_from_json(j):
    """A Cfg with the keys the modules read, with remat's defaults for absent keys."""
    t = j.get("model_type")
    if t == "gpt2":
        H = _get(j, "n_embd", 768)
        return Cfg(model_type=t, vocab_size=_get(j, "vocab_size", 50257), hidden_size=H,
                   max_position_embeddings=_get(j, "n_positions", 1024), n_layer=_get(j, "n_layer", 12),
                   num_attention_heads=_get(j, "n_head", 12), n_inner=_get(j, "n_inner", 4 * H),
                   activation_function=_get(j, "activation_function", "gelu_new"),
                   attn_pdrop=_get(j, "attn_pdrop", 0.1), resid_pdrop=_get(j, "resid_pdrop", 0.1),
                   embd_pdrop=_get(j, "embd_pdrop", 0.1), layer_norm_epsilon=_get(j, "layer_norm_epsilon", 1e-5),
                   tie_word_embeddings=_get(j, "tie_word_embeddings", True))
    if t in ("llama", "mistral"):
        mistral = t == "mistral"
        A = _get(j, "num_attention_heads", 32)
        if _get(j, "hidden_act", "silu") != "silu":
            raise ValueError(f"hf_models: llama hidden_act {j['hidden_act']} is not modelled here")
        return Cfg(model_type=t, vocab_size=_get(j, "vocab_size", 32000), hidden_size=_get(j, "hidden_size", 4096),
                   intermediate_size=_get(j, "intermediate_size", 14336 if mistral else 11008),
                   num_hidden_layers=_get(j, "num_hidden_layers", 32), num_attention_heads=A,
                   num_key_value_heads=_get(j, "num_key_value_heads", 8 if mistral else A),
                   attention_dropout=_get(j, "attention_dropout", 0.0), rms_norm_eps=_get(j, "rms_norm_eps", 1e-6),
                   rope_theta=_get(j, "rope_theta", 10000.0), hidden_act="silu",
                   tie_word_embeddings=_get(j, "tie_word_embeddings", False))
    if t == "gpt_neox":
        return Cfg(model_type=t, vocab_size=_get(j, "vocab_size", 50432), hidden_size=_get(j, "hidden_size", 6144),
                   num_hidden_layers=_get(j, "num_hidden_layers", 44),
                   num_attention_heads=_get(j, "num_attention_heads", 64),
                   intermediate_size=_get(j, "intermediate_size", 24576), hidden_act=_get(j, "hidden_act", "gelu"),
                   rotary_pct=_get(j, "rotary_pct", 0.25), rotary_emb_base=_get(j, "rotary_emb_base", 10000.0),
                   attention_dropout=_get(j, "attention_dropout", 0.0), hidden_dropout=_get(j, "hidden_dropout", 0.0),
                   use_parallel_residual=_get(j, "use_parallel_residual", True),
                   layer_norm_eps=_get(j, "layer_norm_eps", 1e-5),
                   tie_word_embeddings=_get(j, "tie_word_embeddings", False))
    raise ValueError(f"hf_models: model_type {t!r} is not built here; use gpt2, llama, mistral or gpt_neox")


def build_model(j):
    c = config_from_json(j)
    cls = {"gpt2": GPT2LMHeadModel, "llama": LlamaForCausalLM, "mistral": LlamaForCausalLM,
           "gpt_neox": GPTNeoXForCausalLM}[c.model_type]
    return cls(c)
