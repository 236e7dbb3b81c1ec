#include "planner/graph/profiles.hpp"

#include <cassert>

#include "planner/graph/families.hpp"
#include "planner/graph/profile_remat.hpp"

namespace remat {

family::Dims family::dims_of(const StageRequest& r) {
    const ModelConfig& m = *r.model;
    return {r.batch, r.seq, m.hidden, m.n_heads, m.n_kv_heads, m.head_dim, m.ffn, m.vocab};
}

StageGraph build_stage_graph(const StageRequest& r) {
    using namespace family;
    assert(r.model && "StageRequest needs a model");
    const ModelConfig& m = *r.model;
    const Dims d = dims_of(r);
    StageGraph g;
    if (runtime_profile(r.profile)) {
        build_remat_stage(g, r.kind, m, r.batch, r.seq, r.precision,
                          r.profile == Profile::remat ? RematBackend::cpu : RematBackend::cuda,
                          r.attention);
        return g;
    }
    // Megatron's kernels fix 2-byte activations whatever the mode: the profile wins.
    const Precision p = r.profile == Profile::megatron ? Precision::bf16 : r.precision;
    WeightPolicy w;
    if (r.train != Training::full) {
        // Adapters and bitsandbytes' storage are the blocks' (transformers keeps lm_head out of
        // quantization; PEFT's targets here are block linears).
        const bool block = r.kind == StageKind::block;
        w.frozen = true;
        w.read = r.frozen_read;
        w.lora = block ? &r.lora : nullptr;
        w.storage = block ? r.base_dtype : BaseDType::fp32;
        w.forward_only = r.train == Training::frozen;
    }
    OpBuilder b(g, r.train != Training::full ? dtype_policy(r) : dtype_policy(p, r.autocast_device),
                w);
    TensorId out = no_tensor;
    switch (r.kind) {
        case StageKind::embedding:
            out = embedding_stage(b, d, m, r.profile);
            break;
        case StageKind::norm:
            out = norm_stage(b, d, m, r.profile);
            break;
        case StageKind::head:
            out = head_stage(b, d, m, r.profile, r.dpo);
            break;
        case StageKind::block:
            if (r.profile == Profile::megatron) {
                out = megatron_block(b, d, m);
            } else if (m.arch == Arch::gpt2) {
                out = hf_gpt2_block(b, d, m, r.profile);
            } else if (m.arch == Arch::gpt_neox) {
                out = hf_neox_block(b, d, m, r.profile);
            } else if (m.arch == Arch::falcon) {
                out = hf_falcon_block(b, d, m, r.profile);
            } else {
                out = hf_decoder_block(b, d, m, r.profile, expert_tokens(r));
            }
            break;
    }
    g.finish(out);
    return g;
}

}  // namespace remat
