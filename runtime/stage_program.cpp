// The stage programs of GPT-2 and Llama models, op by op, and their parameter layout.
// docs/runtime.md lists the ops and what each saves; planner/graph/profile_remat.cpp describes the
// same ops for the planner, written separately, and `remat run` compares the two.
#include "runtime/stage_program.hpp"

#include <cmath>

#include "runtime/limits.hpp"

namespace remat::rt {

std::uint64_t TensorSpec::numel() const {
    std::uint64_t n = 1;
    for (std::uint64_t d : shape) n *= d;
    return n;
}

namespace {

template <class T>
class Builder {
  public:
    Builder(const ModelConfig& m, const Shape& s, Model<T>& out)
        : m_(m),
          s_(s),
          out_(out),
          k_(out.backend.get()),
          N_(s.batch * s.seq),
          act_(std::is_same_v<T, float> ? DType::f32 : DType::bf16) {}

    void build() {
        out_.units.resize(1 + m_.n_layers);
        embedding();
        for (std::uint64_t k = 1; k <= m_.n_layers; ++k) block(k);
        final_norm();
        head();
    }

  private:
    // ---- stage and tensor bookkeeping ----
    void begin(std::string name, std::size_t unit) {
        out_.stages.push_back({});
        st().name = std::move(name);
        st().unit = unit;
        stage_index_ = out_.stages.size() - 1;
    }
    StageProgram& st() { return out_.stages.back(); }
    int tensor(std::string name, std::vector<std::uint64_t> shape, DType d, bool grad = true) {
        st().tensors.push_back({std::move(name), std::move(shape), d, grad});
        return static_cast<int>(st().tensors.size() - 1);
    }
    int act(const std::string& name, std::uint64_t width) {
        return tensor(name, {N_, width}, act_);
    }
    int stat(const std::string& name, std::vector<std::uint64_t> shape) {
        return tensor(name, std::move(shape), DType::f32, false);
    }
    ProgramOp& op(std::string name, std::vector<int> in, std::vector<int> out,
                  std::vector<int> saved) {
        st().ops.push_back({std::move(name),
                            std::move(in),
                            std::move(out),
                            std::move(saved),
                            false,
                            0,
                            0,
                            {},
                            {}});
        return st().ops.back();
    }
    std::uint64_t param(const std::string& name, std::uint64_t numel, Init init) {
        UnitLayout& u = out_.units[st().unit];
        u.params.push_back({st().name + "." + name, u.numel, numel, init});
        u.numel += numel;
        return u.numel - numel;
    }
    // Dropout's random stream: one per (step, stage, op), so a recomputation draws the same mask.
    // Captured by value: the ops outlive the builder.
    struct KeyMaker {
        std::uint64_t seed, stage, op;
        double p;
        DropoutKey operator()(const OpArgs& a, std::uint64_t index0) const {
            return {static_cast<float>(p), seed, (a.step << 32) | (stage << 12) | op, index0};
        }
    };
    KeyMaker key_maker(double p) const { return {s_.seed, stage_index_, st_ops(), p}; }
    std::uint64_t st_ops() const { return out_.stages.back().ops.size(); }

    // ---- ops ----
    int norm(const std::string& name, int x) {
        const Backend<T>* be = k_;
        const std::uint64_t H = m_.hidden, N = N_;
        const int y = act(name + ".out", H);
        const std::uint64_t w = param(name + ".weight", H, Init::ones);
        if (m_.norm == NormKind::rmsnorm) {
            const int rstd = stat(name + ".rstd", {N});
            op(name, {x}, {y, rstd}, {x, rstd});
            st().ops.back().forward = [=](const OpArgs& a) {
                be->rmsnorm_forward(a.v<T>(y), a.v<float>(rstd), a.v<T>(x), a.p<T>(w), N, H);
            };
            st().ops.back().backward = [=](const OpArgs& a) {
                be->rmsnorm_backward(a.g<T>(x), a.dp<T>(w), a.g<T>(y), a.v<T>(x), a.p<T>(w),
                                     a.v<float>(rstd), N, H);
            };
            return y;
        }
        const std::uint64_t b = param(name + ".bias", H, Init::zeros);
        const int mean = stat(name + ".mean", {N});
        const int rstd = stat(name + ".rstd", {N});
        op(name, {x}, {y, mean, rstd}, {x, mean, rstd});
        st().ops.back().forward = [=](const OpArgs& a) {
            be->layernorm_forward(a.v<T>(y), a.v<float>(mean), a.v<float>(rstd), a.v<T>(x),
                                  a.p<T>(w), a.p<T>(b), N, H);
        };
        st().ops.back().backward = [=](const OpArgs& a) {
            be->layernorm_backward(a.g<T>(x), a.dp<T>(w), a.dp<T>(b), a.g<T>(y), a.v<T>(x),
                                   a.p<T>(w), a.v<float>(mean), a.v<float>(rstd), N, H);
        };
        return y;
    }

    // weight_offset: a weight that exists already (GPT-2's head reuses the token embedding).
    int linear(const std::string& name, int x, std::uint64_t n_out, bool bias,
               const std::uint64_t* weight_offset = nullptr) {
        const Backend<T>* be = k_;
        const std::uint64_t N = N_, I = st().tensors[x].shape.back(), O = n_out;
        const int y = act(name + ".out", O);
        const std::uint64_t w =
            weight_offset ? *weight_offset : param(name + ".weight", O * I, Init::normal);
        const bool has_b = bias;
        const std::uint64_t b = has_b ? param(name + ".bias", O, Init::zeros) : 0;
        ProgramOp& o = op(name, {x}, {y}, {x});
        o.fwd_workspace_bytes = be->linear_forward_workspace(N, I, O);
        o.bwd_workspace_bytes = be->linear_backward_workspace(N, I, O);
        o.forward = [=](const OpArgs& a) {
            be->linear_forward(a.v<T>(y), a.v<T>(x), a.p<T>(w), has_b ? a.p<T>(b) : nullptr, N, I,
                               O, a.workspace);
        };
        o.backward = [=](const OpArgs& a) {
            be->linear_backward(a.g<T>(x), a.dp<T>(w), has_b ? a.dp<T>(b) : nullptr, a.g<T>(y),
                                a.v<T>(x), a.p<T>(w), N, I, O, a.workspace);
        };
        return y;
    }

    int dropout(const std::string& name, int x, double p) {
        const Backend<T>* be = k_;
        if (p <= 0.0) return x;
        const std::uint64_t n = N_ * m_.hidden;
        const int y = act(name + ".out", m_.hidden);
        const KeyMaker key = key_maker(p);
        ProgramOp& o = op(name, {x}, {y}, {});
        const std::uint64_t per_seq = s_.seq * m_.hidden;
        o.forward = [=](const OpArgs& a) {
            be->dropout_forward(a.v<T>(y), a.v<T>(x), n, key(a, a.row0 * per_seq));
        };
        o.backward = [=](const OpArgs& a) {
            be->dropout_backward(a.g<T>(x), a.g<T>(y), n, key(a, a.row0 * per_seq));
        };
        return y;
    }

    int add(const std::string& name, int l, int r) {
        const Backend<T>* be = k_;
        const std::uint64_t n = N_ * m_.hidden;
        const int y = act(name + ".out", m_.hidden);
        ProgramOp& o = op(name, {l, r}, {y}, {});
        o.forward = [=](const OpArgs& a) { be->add_forward(a.v<T>(y), a.v<T>(l), a.v<T>(r), n); };
        o.backward = [=](const OpArgs& a) {
            be->accumulate(a.g<T>(l), a.g<T>(y), n);
            be->accumulate(a.g<T>(r), a.g<T>(y), n);
        };
        return y;
    }

    int rotary(const std::string& name, int x, std::uint64_t heads) {
        const Backend<T>* be = k_;
        const std::uint64_t B = s_.batch, S = s_.seq, D = m_.head_dim;
        const int y = act(name + ".out", heads * D);
        ProgramOp& o = op(name, {x}, {y}, {});
        o.forward = [=](const OpArgs& a) {
            be->rotary_forward(a.v<T>(y), a.v<T>(x), B, S, heads, D);
        };
        o.backward = [=](const OpArgs& a) {
            be->rotary_backward(a.g<T>(x), a.g<T>(y), B, S, heads, D);
        };
        return y;
    }

    // q, k, v: three tensors, or one fused (B*S, 3H) tensor when k and v are -1.
    int attention(int q, int k, int v) {
        const Backend<T>* be = k_;
        const std::uint64_t A = m_.n_heads, KV = m_.n_kv_heads, D = m_.head_dim, B = s_.batch,
                            S = s_.seq;
        const bool fused = k < 0;
        AttentionShape sh{B, S, A, KV, D, A * D, KV * D, KV * D};
        std::uint64_t k_off = 0, v_off = 0;
        if (fused) {
            sh.q_stride = sh.k_stride = sh.v_stride = 3 * A * D;
            k_off = A * D;
            v_off = 2 * A * D;
        }
        const int kt = fused ? q : k, vt = fused ? q : v;
        const int y = act("attn.core.out", A * D);
        std::vector<int> in = fused ? std::vector<int>{q} : std::vector<int>{q, k, v};
        std::vector<int> saved = in;
        const KeyMaker key = key_maker(m_.attn_dropout);
        if (s_.attention == Attention::eager) {
            // Saves the probabilities instead of out and lse (cpu::eager_attention_forward).
            const int probs = tensor("attn.core.probs", {B, A, S, S}, act_, false);
            saved.push_back(probs);
            ProgramOp& o = op("attn.core", in, {y, probs}, saved);
            o.attention_core = true;
            o.fwd_workspace_bytes = be->eager_attention_forward_workspace(sh);
            o.bwd_workspace_bytes = be->eager_attention_backward_workspace(sh);
            o.forward = [=](const OpArgs& a) {
                be->eager_attention_forward(a.v<T>(y), a.v<T>(probs), a.v<T>(q), a.v<T>(kt) + k_off,
                                            a.v<T>(vt) + v_off, sh, key(a, a.row0), a.workspace);
            };
            o.backward = [=](const OpArgs& a) {
                be->eager_attention_backward(a.g<T>(q), a.g<T>(kt) + k_off, a.g<T>(vt) + v_off,
                                             a.g<T>(y), a.v<T>(q), a.v<T>(kt) + k_off,
                                             a.v<T>(vt) + v_off, a.v<T>(probs), sh, key(a, a.row0),
                                             a.workspace);
            };
            return y;
        }
        const int lse = stat("attn.core.lse", {B, A, S});
        saved.push_back(y);
        saved.push_back(lse);
        ProgramOp& o = op("attn.core", in, {y, lse}, saved);
        o.attention_core = true;
        o.fwd_workspace_bytes = be->attention_forward_workspace(sh);
        o.bwd_workspace_bytes = be->attention_backward_workspace(sh);
        o.forward = [=](const OpArgs& a) {
            be->attention_forward(a.v<T>(y), a.v<float>(lse), a.v<T>(q), a.v<T>(kt) + k_off,
                                  a.v<T>(vt) + v_off, sh, key(a, a.row0), a.workspace);
        };
        o.backward = [=](const OpArgs& a) {
            be->attention_backward(a.g<T>(q), a.g<T>(kt) + k_off, a.g<T>(vt) + v_off, a.g<T>(y),
                                   a.v<T>(q), a.v<T>(kt) + k_off, a.v<T>(vt) + v_off, a.v<T>(y),
                                   a.v<float>(lse), sh, key(a, a.row0), a.workspace);
        };
        return y;
    }

    // ---- stages ----
    void embedding() {
        const Backend<T>* be = k_;
        begin("embedding", 0);
        const std::uint64_t N = N_, S = s_.seq, H = m_.hidden;
        const int ids = tensor("input_ids", {s_.batch, S}, DType::i32, false);
        st().input = ids;
        wte_ = param("wte", m_.vocab * H, Init::normal);
        const bool pos = m_.learned_positions;
        const std::uint64_t wte = wte_, wpe = pos ? param("wpe", m_.context * H, Init::normal) : 0;
        const int e = act("embedding.out", H);
        ProgramOp& o = op("embedding", {ids}, {e}, {ids});
        o.bwd_workspace_bytes = be->embedding_backward_workspace(N);
        o.forward = [=](const OpArgs& a) {
            be->embedding_forward(a.v<T>(e), a.v<std::int32_t>(ids), a.p<T>(wte),
                                  pos ? a.p<T>(wpe) : nullptr, N, S, H);
        };
        o.backward = [=](const OpArgs& a) {
            be->embedding_backward(a.dp<T>(wte), pos ? a.dp<T>(wpe) : nullptr, a.g<T>(e),
                                   a.v<std::int32_t>(ids), N, S, H, a.workspace);
        };
        st().output = dropout("drop", e, m_.embd_dropout);
    }

    void block(std::uint64_t k) {
        begin("block " + std::to_string(k), k);
        const int x = act("x", m_.hidden);
        st().input = x;
        st().output = m_.arch == Arch::llama ? llama_block(x) : gpt2_block(x);
    }

    int gpt2_block(int x) {
        const Backend<T>* be = k_;
        const std::uint64_t H = m_.hidden;
        const int qkv = linear("attn.qkv", norm("ln_1", x), 3 * H, m_.attn_bias);
        const int ctx = attention(qkv, -1, -1);
        const int proj = dropout("attn.resid_dropout", linear("attn.proj", ctx, H, m_.attn_bias),
                                 m_.resid_dropout);
        const int r1 = add("residual_1", proj, x);
        const int fc = linear("mlp.fc", norm("ln_2", r1), m_.ffn, m_.mlp_bias);
        const std::uint64_t n = N_ * m_.ffn;
        const int g = act("mlp.gelu.out", m_.ffn);
        ProgramOp& o = op("mlp.gelu", {fc}, {g}, {fc});
        o.forward = [=](const OpArgs& a) { be->gelu_forward(a.v<T>(g), a.v<T>(fc), n); };
        o.backward = [=](const OpArgs& a) {
            be->gelu_backward(a.g<T>(fc), a.g<T>(g), a.v<T>(fc), n);
        };
        const int down =
            dropout("mlp.dropout", linear("mlp.proj", g, H, m_.mlp_bias), m_.resid_dropout);
        return add("residual_2", down, r1);
    }

    int llama_block(int x) {
        const Backend<T>* be = k_;
        const std::uint64_t H = m_.hidden, A = m_.n_heads, KV = m_.n_kv_heads, D = m_.head_dim;
        const int h1 = norm("input_norm", x);
        const int q = linear("attn.q_proj", h1, A * D, m_.attn_bias);
        const int k = linear("attn.k_proj", h1, KV * D, m_.attn_bias);
        const int v = linear("attn.v_proj", h1, KV * D, m_.attn_bias);
        const int ctx = attention(rotary("attn.rope_q", q, A), rotary("attn.rope_k", k, KV), v);
        const int r1 = add("residual_1", linear("attn.o_proj", ctx, H, m_.attn_bias), x);
        const int h2 = norm("post_norm", r1);
        const int gate = linear("mlp.gate_proj", h2, m_.ffn, m_.mlp_bias);
        const int up = linear("mlp.up_proj", h2, m_.ffn, m_.mlp_bias);
        const std::uint64_t n = N_ * m_.ffn;
        const int y = act("mlp.swiglu.out", m_.ffn);
        ProgramOp& o = op("mlp.swiglu", {gate, up}, {y}, {gate, up});
        o.forward = [=](const OpArgs& a) {
            be->swiglu_forward(a.v<T>(y), a.v<T>(gate), a.v<T>(up), n);
        };
        o.backward = [=](const OpArgs& a) {
            be->swiglu_backward(a.g<T>(gate), a.g<T>(up), a.g<T>(y), a.v<T>(gate), a.v<T>(up), n);
        };
        return add("residual_2", linear("mlp.down_proj", y, H, m_.mlp_bias), r1);
    }

    void final_norm() {
        begin("final norm", 0);
        const int x = act("x", m_.hidden);
        st().input = x;
        st().output = norm("final_norm", x);
    }

    void head() {
        const Backend<T>* be = k_;
        begin("head", 0);
        const std::uint64_t N = N_, V = m_.vocab;
        const int x = act("x", m_.hidden);
        st().input = x;
        // The targets are copied in first (they arrive with the batch), then the logits.
        const int targets = tensor("loss.targets", {N}, DType::i32, false);
        op("loss.targets", {}, {targets}, {}).forward = [=](const OpArgs& a) {  // from the host
            be->upload(a.v<std::int32_t>(targets), a.targets, 4 * N);
        };
        st().ops.back().backward = [](const OpArgs&) {};
        const int logits = linear("lm_head", x, V, false, m_.tied_embeddings ? &wte_ : nullptr);
        const int loss = tensor("loss", {1}, DType::f32);
        const int lse = stat("loss.lse", {N});
        // The loss is the mean over the global batch: each rank contributes its sum / (W*B*S).
        const double scale = 1.0 / static_cast<double>(s_.world * N);
        ProgramOp& o =
            op("loss.cross_entropy", {logits, targets}, {loss, lse}, {logits, targets, lse});
        o.forward = [=](const OpArgs& a) {
            const double sum = be->cross_entropy_forward(a.v<float>(lse), a.v<T>(logits),
                                                         a.v<std::int32_t>(targets), N, V);
            const float mean_part = static_cast<float>(sum * scale);
            be->upload(a.v<float>(loss), &mean_part,
                       sizeof mean_part);  // backend memory: never written by the host
        };
        o.backward = [=](const OpArgs& a) {
            be->cross_entropy_backward(a.g<T>(logits), a.v<T>(logits), a.v<float>(lse),
                                       a.v<std::int32_t>(targets), N, V, static_cast<float>(scale));
        };
        st().output = loss;
    }

    const ModelConfig& m_;
    Shape s_;
    Model<T>& out_;
    const Backend<T>* k_;  // outlives the ops: the Model holds it
    std::uint64_t N_;
    DType act_;
    std::uint64_t stage_index_ = 0;
    std::uint64_t wte_ = 0;
};

}  // namespace

template <class T>
Model<T> build_model(const ModelConfig& m, const Shape& shape,
                     std::shared_ptr<const Backend<T>> backend) {
    check_buildable(m, shape);
    Model<T> out;
    out.backend = std::move(backend);
    Builder<T>(m, shape, out).build();
    return out;
}

void initial_parameters(const UnitLayout& u, std::uint64_t seed, std::size_t unit,
                        std::uint64_t begin, std::uint64_t end, float* out) {
    for (const ParamSpec& s : u.params) {
        const std::uint64_t lo = std::max(begin, s.offset), hi = std::min(end, s.offset + s.numel);
        for (std::uint64_t j = lo; j < hi; ++j) {
            float v = s.init == Init::ones ? 1.0f : 0.0f;
            if (s.init == Init::normal) {
                // Box-Muller on two counter-based uniforms.
                const std::uint64_t stream = seed * 1000003ull + unit;
                const double u1 = 1.0 - uniform01(seed, stream, 2 * j),
                             u2 = uniform01(seed, stream, 2 * j + 1);
                v = static_cast<float>(0.02 * std::sqrt(-2.0 * std::log(u1)) *
                                       std::cos(2.0 * M_PI * u2));
            }
            out[j - begin] = v;
        }
    }
}

template Model<float> build_model<float>(const ModelConfig&, const Shape&,
                                         std::shared_ptr<const Backend<float>>);
template Model<bf16> build_model<bf16>(const ModelConfig&, const Shape&,
                                       std::shared_ptr<const Backend<bf16>>);

}  // namespace remat::rt
