"""Whole Hugging Face style causal LMs built from a config.json, out of hf_modules' blocks.

GPT2LMHeadModel, LlamaForCausalLM (also model_type mistral), GPTNeoXForCausalLM,
Qwen2ForCausalLM, GemmaForCausalLM, Gemma2ForCausalLM, Phi3ForCausalLM, MixtralForCausalLM and
FalconForCausalLM as transformers (v4.48+) lay them out: the same attribute paths (transformer.h,
model.layers, gpt_neox.layers, lm_head / embed_out), the same forward (embeddings, gemma's
normalizer, the causal mask and rotary cos/sin made once per forward, the blocks in a loop, the final
norm, the head, gemma2's final soft-capping, ForCausalLMLoss). For gpt2 / llama / mistral / gpt_neox
the defaults for absent keys are remat's reader's (planner/config/model.cpp, from_hf_config); for
the newer families they are the transformers configuration classes' (cited at each).
"""

import contextlib

import torch
import torch.nn as nn

from hf_modules import (Cfg, FalconDecoderLayer, Gemma2DecoderLayer, GemmaDecoderLayer, GemmaRMSNorm,  # noqa: F401
                        GPT2Block, GPT2Embeddings, GPTNeoXLayer, LlamaDecoderLayer, LlamaRMSNorm,
                        LlamaRotaryEmbedding, MixtralDecoderLayer, Phi3DecoderLayer, Qwen2DecoderLayer,
                        Qwen2MoeDecoderLayer,
                        for_causal_lm_loss, gemma_scale_embeddings, logit_softcap,
                        randomize_params)  # (re-exported)


def causal_mask(B, S, dtype, sliding_window=None):
    """The float mask transformers builds once per forward for eager attention (llama, gpt_neox):
    0 where attended, finfo(dtype).min above the diagonal, [B, 1, S, S] (an expanded view). With a
    sliding window (qwen2 use_sliding_window, mistral/mixtral/phi3 sliding_window, gemma2's even layers)
    also min where i - j >= window; it only changes which entries are masked, never a saved tensor."""
    min_dtype = torch.finfo(dtype).min
    mask = torch.full((S, S), min_dtype, dtype=dtype).triu(1)
    if sliding_window is not None and sliding_window < S:
        mask = mask.masked_fill(torch.ones(S, S, dtype=torch.bool).tril(-sliding_window), min_dtype)
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

    def input_embeddings(self):
        return getattr(getattr(self, self.body_name), self.embedding_name)

    def enable_input_require_grads(self):
        """transformers' PreTrainedModel.enable_input_require_grads: the input embeddings' output
        requires grad, so that a frozen base still passes gradients to the adapters (and a checkpointed
        block's input needs them)."""
        def make_inputs_require_grads(module, input, output):
            output.requires_grad_(True)
        self.input_embeddings().register_forward_hook(make_inputs_require_grads)

    def head(self, hidden_states):
        logits = getattr(self, self.head_name)(hidden_states)
        cap = getattr(self.config, "final_logit_softcapping", None)  # gemma2
        if cap is not None:
            logits = logit_softcap(logits, cap)
        return logits

    def logits(self, input_ids):
        """...ForCausalLM.forward(input_ids).logits, without labels: its hidden_states go when it
        returns, before the caller's loss."""
        return self.head(getattr(self, self.body_name)(input_ids))

    def forward(self, input_ids, labels):
        # as transformers' ...ForCausalLM.forward: hidden_states and logits are locals through the loss
        hidden_states = getattr(self, self.body_name)(input_ids)
        logits = self.head(hidden_states)
        return for_causal_lm_loss(logits, labels, self.config.vocab_size)


class GPT2LMHeadModel(CausalLM):
    body_name, head_name, embedding_name, final_norm_name = "transformer", "lm_head", "wte", "ln_f"

    def __init__(self, c):
        super().__init__(c, GPT2Model(c))


class LlamaModel(nn.Module):
    """LlamaModel; also the body of qwen2, gemma, gemma2, phi3 and mixtral, which differ in the layer,
    the norm, the head_dim of the rotary embedding, gemma's normalizer and the sliding-window mask."""

    layer_cls, norm_cls, scale_embeddings = LlamaDecoderLayer, LlamaRMSNorm, False

    def __init__(self, c):
        super().__init__()
        self.config = c
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList([self.layer_cls(c) for _ in range(c.num_hidden_layers)])
        self.norm = self.norm_cls(c.hidden_size, "norm", eps=c.rms_norm_eps)
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        self.rotary_emb = LlamaRotaryEmbedding(head_dim, base=c.rope_theta)

    def layer_window(self, i):
        return getattr(self.config, "sliding_window", None)

    def forward(self, input_ids):
        inputs_embeds = self.embed_tokens(input_ids)
        B, S = input_ids.shape
        position_ids = torch.arange(S).unsqueeze(0)
        windows = {self.layer_window(i) for i in range(len(self.layers))}
        masks = {w: causal_mask(B, S, inputs_embeds.dtype, w) for w in windows}
        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        if self.scale_embeddings:  # gemma, gemma2: hidden_states * torch.tensor(sqrt(H), dtype=hidden dtype)
            hidden_states = gemma_scale_embeddings(hidden_states, self.config.hidden_size)
        for i, layer in enumerate(self.layers):
            hidden_states = layer(hidden_states, attention_mask=masks[self.layer_window(i)],
                                  position_embeddings=position_embeddings)
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


class Qwen2Model(LlamaModel):
    layer_cls = Qwen2DecoderLayer

    def layer_window(self, i):
        # Qwen2Config: sliding_window only if use_sliding_window, on layers >= max_window_layers
        c = self.config
        return c.sliding_window if c.use_sliding_window and i >= c.max_window_layers else None


class GemmaModel(LlamaModel):
    layer_cls, norm_cls, scale_embeddings = GemmaDecoderLayer, GemmaRMSNorm, True


class Gemma2Model(LlamaModel):
    layer_cls, norm_cls, scale_embeddings = Gemma2DecoderLayer, GemmaRMSNorm, True

    def layer_window(self, i):
        return self.config.sliding_window if not bool(i % 2) else None  # Gemma2DecoderLayer.is_sliding


class Phi3Model(LlamaModel):
    layer_cls = Phi3DecoderLayer


class MixtralModel(LlamaModel):
    layer_cls = MixtralDecoderLayer


class Qwen2MoeModel(Qwen2Model):
    layer_cls = Qwen2MoeDecoderLayer


class _ModelLM(CausalLM):
    body_name, head_name, embedding_name, final_norm_name = "model", "lm_head", "embed_tokens", "norm"
    body_cls = None

    def __init__(self, c):
        super().__init__(c, self.body_cls(c))


class Qwen2ForCausalLM(_ModelLM):
    body_cls = Qwen2Model


class GemmaForCausalLM(_ModelLM):
    body_cls = GemmaModel


class Gemma2ForCausalLM(_ModelLM):
    body_cls = Gemma2Model


class Phi3ForCausalLM(_ModelLM):
    body_cls = Phi3Model


class MixtralForCausalLM(_ModelLM):
    """The loss is the LM loss only: output_router_logits is false by default, so no load-balancing
    loss is added (the router logits are still computed in every layer)."""
    body_cls = MixtralModel


class Qwen2MoeForCausalLM(_ModelLM):
    """LM loss only, as Mixtral's (output_router_logits false by default)."""
    body_cls = Qwen2MoeModel


class FalconModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.config = c
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.h = nn.ModuleList([FalconDecoderLayer(c) for _ in range(c.num_hidden_layers)])
        self.ln_f = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_epsilon)
        self.rotary_emb = LlamaRotaryEmbedding(c.hidden_size // c.num_attention_heads, base=c.rope_theta)

    def forward(self, input_ids):
        inputs_embeds = self.word_embeddings(input_ids)
        B, S = input_ids.shape
        position_ids = torch.arange(S).unsqueeze(0)
        mask = causal_mask(B, S, inputs_embeds.dtype)
        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        for block in self.h:
            hidden_states = block(hidden_states, attention_mask=mask, position_embeddings=position_embeddings)
        return self.ln_f(hidden_states)


class FalconForCausalLM(CausalLM):
    body_name, head_name, embedding_name, final_norm_name = "transformer", "lm_head", "word_embeddings", "ln_f"

    def __init__(self, c):
        super().__init__(c, FalconModel(c))


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
        # LlamaMLP is always gated: act_fn = ACT2FN[config.hidden_act], whatever the activation
        return Cfg(model_type=t, vocab_size=_get(j, "vocab_size", 32000), hidden_size=_get(j, "hidden_size", 4096),
                   intermediate_size=_get(j, "intermediate_size", 14336 if mistral else 11008),
                   num_hidden_layers=_get(j, "num_hidden_layers", 32), num_attention_heads=A,
                   num_key_value_heads=_get(j, "num_key_value_heads", 8 if mistral else A),
                   attention_dropout=_get(j, "attention_dropout", 0.0), rms_norm_eps=_get(j, "rms_norm_eps", 1e-6),
                   rope_theta=_get(j, "rope_theta", 10000.0), hidden_act=_get(j, "hidden_act", "silu"),
                   sliding_window=_get(j, "sliding_window", 4096) if mistral else None,
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
    if t in NEW_FAMILY_DEFAULTS:
        return _new_family_config(t, j)
    raise ValueError(f"hf_models: model_type {t!r} is not built here; use gpt2, llama, mistral, gpt_neox, "
                     f"{', '.join(NEW_FAMILY_DEFAULTS)}")


# Defaults of transformers' configuration classes for absent keys (configuration_<family>.py; qwen2,
# gemma, phi3, mixtral read at commit 008e5743 (v5 dataclass configs, same values as the v4.48 __init__
# defaults), gemma2 at 006e8693 (Gemma2Config in modular_gemma2.py), falcon's v4.48 __init__ (the
# snapshot read, 05585536, predates num_kv_heads / ffn_hidden_size / activation / rope_theta; those
# defaults are v4.48's: num_kv_heads None -> num_attention_heads, ffn_hidden_size None -> 4 * hidden,
# activation "gelu", rope_theta 10000.0, max_position_embeddings 2048, num_ln_in_parallel_attn None).
# tie_word_embeddings falls back to PretrainedConfig's True where the class does not set it (falcon).
NEW_FAMILY_DEFAULTS = {
    "qwen2": dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32, hidden_act="silu", max_position_embeddings=32768,
                  rms_norm_eps=1e-6, tie_word_embeddings=False, rope_theta=10000.0, use_sliding_window=False,
                  sliding_window=4096, max_window_layers=28, attention_dropout=0.0),
    "gemma": dict(vocab_size=256000, hidden_size=3072, intermediate_size=24576, num_hidden_layers=28,
                  num_attention_heads=16, num_key_value_heads=16, head_dim=256, hidden_act="gelu_pytorch_tanh",
                  max_position_embeddings=8192, rms_norm_eps=1e-6, tie_word_embeddings=True, rope_theta=10000.0,
                  attention_bias=False, attention_dropout=0.0),
    "gemma2": dict(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                   num_attention_heads=8, num_key_value_heads=4, head_dim=256, hidden_activation="gelu_pytorch_tanh",
                   max_position_embeddings=8192, rms_norm_eps=1e-6, tie_word_embeddings=True, rope_theta=10000.0,
                   attention_bias=False, attention_dropout=0.0, query_pre_attn_scalar=256, sliding_window=4096,
                   final_logit_softcapping=30.0, attn_logit_softcapping=50.0),
    "phi3": dict(vocab_size=32064, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=None, resid_pdrop=0.0, embd_pdrop=0.0,
                 attention_dropout=0.0, hidden_act="silu", max_position_embeddings=4096, rms_norm_eps=1e-5,
                 tie_word_embeddings=False, rope_theta=10000.0, sliding_window=None),
    "mixtral": dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=8, head_dim=None, hidden_act="silu",
                    max_position_embeddings=4096 * 32, rms_norm_eps=1e-5, tie_word_embeddings=False,
                    rope_theta=1e6, sliding_window=None, attention_dropout=0.0, num_experts_per_tok=2,
                    num_local_experts=8, output_router_logits=False, router_aux_loss_coef=0.001,
                    router_jitter_noise=0.0),
    # Qwen2MoeConfig (configuration_qwen2_moe.py; every layer sparse: decoder_sparse_step 1, no
    # mlp_only_layers, the only layout hf_models builds, as remat)
    "qwen2_moe": dict(vocab_size=151936, hidden_size=2048, intermediate_size=5632, num_hidden_layers=24,
                      num_attention_heads=16, num_key_value_heads=16, hidden_act="silu",
                      max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=False,
                      rope_theta=10000.0, use_sliding_window=False, sliding_window=4096, max_window_layers=28,
                      attention_dropout=0.0, decoder_sparse_step=1, moe_intermediate_size=1408,
                      shared_expert_intermediate_size=5632, num_experts_per_tok=4, num_experts=60,
                      norm_topk_prob=False, output_router_logits=False, mlp_only_layers=None),
    "falcon": dict(vocab_size=65024, hidden_size=4544, num_hidden_layers=32, num_attention_heads=71,
                   num_ln_in_parallel_attn=None, layer_norm_epsilon=1e-5, hidden_dropout=0.0, attention_dropout=0.0,
                   num_kv_heads=None, alibi=False, new_decoder_architecture=False, multi_query=True,
                   parallel_attn=True, bias=False, max_position_embeddings=2048, rope_theta=10000.0,
                   ffn_hidden_size=None, activation="gelu", tie_word_embeddings=True),
}

# config.json spellings transformers maps onto the attribute names (FalconConfig.attribute_map and
# its n_embed kwarg; old Falcon checkpoints use n_layer / n_head / n_head_kv).
_ALIASES = {"falcon": {"n_layer": "num_hidden_layers", "n_head": "num_attention_heads", "n_embed": "hidden_size",
                       "n_head_kv": "num_kv_heads"}}


def _new_family_config(t, j):
    j = dict(j)
    for old, new in _ALIASES.get(t, {}).items():
        if old in j and j.get(new) is None:
            j[new] = j.pop(old)
    d = {k: _get(j, k, v) for k, v in NEW_FAMILY_DEFAULTS[t].items()}
    if "rope_parameters" in j and isinstance(j["rope_parameters"], dict) and "rope_theta" not in j:
        d["rope_theta"] = j["rope_parameters"].get("rope_theta", d["rope_theta"])
    if t in ("phi3", "mixtral", "qwen2") and d["num_key_value_heads"] is None:
        d["num_key_value_heads"] = d["num_attention_heads"]
    if t == "qwen2_moe" and (d["decoder_sparse_step"] != 1 or d["mlp_only_layers"]):
        raise ValueError("hf_models: qwen2_moe with dense layers among the sparse ones is not built here")
    if t in ("qwen2", "qwen2_moe") and not d["use_sliding_window"]:
        d["sliding_window"] = None  # Qwen2Config: sliding_window only with use_sliding_window
    if t == "falcon":
        if d["alibi"]:
            raise ValueError("hf_models: falcon with alibi is not modelled here (rotary only)")
        if d["num_kv_heads"] is None:
            d["num_kv_heads"] = d["num_attention_heads"]
        if d["ffn_hidden_size"] is None:
            d["ffn_hidden_size"] = 4 * d["hidden_size"]
        if d["new_decoder_architecture"] and not d["parallel_attn"]:
            # FalconDecoderLayer builds input_layernorm/post_attention_layernorm but its forward then
            # calls ln_attn/ln_mlp (num_ln_in_parallel_attn set to 2): transformers fails the same way
            raise ValueError("hf_models: falcon new_decoder_architecture with parallel_attn false does not run "
                             "in transformers either")
    return Cfg(model_type=t, **d)


def build_model(j):
    c = config_from_json(j)
    cls = {"gpt2": GPT2LMHeadModel, "llama": LlamaForCausalLM, "mistral": LlamaForCausalLM,
           "gpt_neox": GPTNeoXForCausalLM, "qwen2": Qwen2ForCausalLM, "gemma": GemmaForCausalLM,
           "gemma2": Gemma2ForCausalLM, "phi3": Phi3ForCausalLM, "mixtral": MixtralForCausalLM,
           "qwen2_moe": Qwen2MoeForCausalLM, "falcon": FalconForCausalLM}[c.model_type]
    return cls(c)


@contextlib.contextmanager
def _meta_factories():
    """torch 1.13 has no `with torch.device("meta")`: route the factories modules use for their
    parameters (torch.empty / zeros / ones) to the meta device so nothing is allocated."""
    saved = {n: getattr(torch, n) for n in ("empty", "zeros", "ones")}

    def wrap(f):
        def g(*a, **kw):
            kw["device"] = "meta"
            return f(*a, **kw)
        return g

    try:
        for n, f in saved.items():
            setattr(torch, n, wrap(f))
        yield
    finally:
        for n, f in saved.items():
            setattr(torch, n, f)


def count_parameters(j):
    """Parameters of the model of config.json `j` (tied weights once), built on the meta device."""
    with _meta_factories():
        model = build_model(j)
    return sum(p.numel() for p in model.parameters())
