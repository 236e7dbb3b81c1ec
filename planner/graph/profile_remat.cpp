// The `remat` profile: the op decomposition of remat's own runtime (runtime/stage_program.cpp,
// runtime/cpu/kernels.hpp), written here from the ops' definitions (docs/runtime.md), never
// from the runtime's code or sizes: `remat run` holds the two against each other.
//
// Activations are fp32 (fp32) or bf16 (bf16-mixed), norm statistics and log-sum-exps fp32,
// token ids int32. Dropout regenerates its mask from a counter-based RNG, so it saves nothing.
// Attention is flash-style: it saves q, k, v, its output and the log-sum-exp. On the CPU backend
// its S x S scores live in per-(batch, head) fp32 scratch; the CUDA backend's fused kernels never
// form them (the backward's only workspace is one fp32 per query row). On the CPU backend
// (`remat`), under bf16-mixed every GEMM converts its operands into fp32 staging buffers (OpenBLAS
// has no bf16 GEMM): op workspace here. The CUDA backend (`remat-cuda`) multiplies bf16 directly.
#include "planner/graph/profile_remat.hpp"

#include <algorithm>
#include <cmath>

#include "planner/config/checked.hpp"
#include "planner/graph/op_builder.hpp"

namespace remat {
namespace {

using Shape = std::vector<std::uint64_t>;

// The CPU attention's per-(batch, head) fp32 scratch: `n_ss` S x S matrices and `n_rows` rows of
// S x D (forward: P and q, k, v, out; backward: P, dP and q, k, v, dout, dq, dk, dv).
std::uint64_t cpu_attention_scratch_bytes(std::uint64_t n_rows, std::uint64_t S, std::uint64_t D,
                                          std::uint64_t n_ss) {
    return checked_mul(4, checked_add(checked_mul(n_ss, S, S), checked_mul(n_rows, S, D)));
}

class RematStage {
  public:
    RematStage(StageGraph& g, const ModelConfig& m, std::uint64_t B, std::uint64_t S, Precision p,
               RematBackend be, Attention attention)
        : g_(g),
          ops_(g, DTypePolicy{}),
          m_(m),
          B_(B),
          S_(S),
          N_(checked_mul(B, S)),
          act_(p == Precision::fp32 ? DType::f32 : DType::bf16),
          backend_(be),
          attention_(attention),
          staged_(p != Precision::fp32 && be == RematBackend::cpu) {}

    TensorId embedding() {
        const TensorId ids = g_.add_input("input_ids", {B_, S_}, DType::i32, false);
        const TensorId emb = act("embedding.out", {N_, m_.hidden});
        Op e = make("embedding", OpClass::memory, {ids}, {emb}, {ids});
        // The CUDA backward links each row to the next with its token id (two int32 per row),
        // so that dwte is summed in row order without atomics.
        if (backend_ == RematBackend::cuda) e.bwd_workspace_bytes = checked_mul(8, N_);
        g_.add_op(std::move(e));
        return dropout("drop", emb, m_.embd_dropout);
    }

    TensorId block() {
        const TensorId x = g_.add_input("x", {N_, m_.hidden}, act_);
        return m_.arch == Arch::llama ? llama_block(x) : gpt2_block(x);
    }

    TensorId final_norm() {
        const TensorId x = g_.add_input("x", {N_, m_.hidden}, act_);
        return norm("final_norm", x);
    }

    TensorId head() {
        const TensorId x = g_.add_input("x", {N_, m_.hidden}, act_);
        // The targets are copied in first (they arrive with the batch), then the logits.
        const TensorId targets = g_.add_tensor("loss.targets", {N_}, DType::i32, false);
        op("loss.targets", OpClass::memory, {}, {targets}, {});
        const TensorId logits = linear("lm_head", x, m_.vocab);
        const TensorId loss = g_.add_tensor("loss", {1}, DType::f32);
        const TensorId lse = stat("loss.lse", {N_});
        Op ce = make("loss.cross_entropy", OpClass::memory, {logits, targets}, {loss, lse},
                     {logits, targets, lse});
        ce.fwd_flops = ce.bwd_flops = flop_product(5, N_, m_.vocab);
        g_.add_op(std::move(ce));
        return loss;
    }

  private:
    TensorId gpt2_block(TensorId x) {
        const std::uint64_t H = m_.hidden;
        const TensorId h1 = norm("ln_1", x);
        const TensorId qkv = linear("attn.qkv", h1, checked_mul(3, H));
        const TensorId ctx = attention({qkv});
        const TensorId proj =
            dropout("attn.resid_dropout", linear("attn.proj", ctx, H), m_.resid_dropout);
        const TensorId r1 = add("residual_1", proj, x);
        const TensorId fc = linear("mlp.fc", norm("ln_2", r1), m_.ffn);
        const TensorId g = act("mlp.gelu.out", {N_, m_.ffn});
        op("mlp.gelu", OpClass::memory, {fc}, {g}, {fc});
        const TensorId down = dropout("mlp.dropout", linear("mlp.proj", g, H), m_.resid_dropout);
        return add("residual_2", down, r1);
    }

    TensorId llama_block(TensorId x) {
        const std::uint64_t H = m_.hidden, AD = checked_mul(m_.n_heads, m_.head_dim),
                            KVD = checked_mul(m_.n_kv_heads, m_.head_dim);
        const TensorId h1 = norm("input_norm", x);
        const TensorId q = linear("attn.q_proj", h1, AD);
        const TensorId k = linear("attn.k_proj", h1, KVD);
        const TensorId v = linear("attn.v_proj", h1, KVD);
        const TensorId qr = rotary("attn.rope_q", q);
        const TensorId kr = rotary("attn.rope_k", k);
        const TensorId ctx = attention({qr, kr, v});
        const TensorId r1 = add("residual_1", linear("attn.o_proj", ctx, H), x);
        const TensorId h2 = norm("post_norm", r1);
        const TensorId gate = linear("mlp.gate_proj", h2, m_.ffn);
        const TensorId up = linear("mlp.up_proj", h2, m_.ffn);
        const TensorId a = act("mlp.swiglu.out", {N_, m_.ffn});
        op("mlp.swiglu", OpClass::memory, {gate, up}, {a}, {gate, up});
        return add("residual_2", linear("mlp.down_proj", a, H), r1);
    }

    TensorId act(const std::string& name, Shape s) {
        return g_.add_tensor(name, std::move(s), act_);
    }
    TensorId stat(const std::string& name, Shape s) {
        return g_.add_tensor(name, std::move(s), DType::f32, false);
    }

    // An op with the builders' default traffic (OpBuilder::make; dtypes here are the profile's
    // own).
    Op make(const std::string& name, OpClass c, std::vector<TensorId> in, std::vector<TensorId> out,
            std::vector<TensorId> saved) {
        return ops_.make(name, c, std::move(in), std::move(out), std::move(saved));
    }
    void op(const std::string& name, OpClass c, std::vector<TensorId> in, std::vector<TensorId> out,
            std::vector<TensorId> saved) {
        g_.add_op(make(name, c, std::move(in), std::move(out), std::move(saved)));
    }

    // LayerNorm (GPT-2) or RMSNorm (Llama): saves its input and per-row statistics
    // (mean and rstd; rstd only for RMSNorm).
    TensorId norm(const std::string& name, TensorId x) {
        const TensorId y = act(name + ".out", {N_, m_.hidden});
        if (m_.norm == NormKind::rmsnorm) {
            const TensorId rstd = stat(name + ".rstd", {N_});
            op(name, OpClass::memory, {x}, {y, rstd}, {x, rstd});
        } else {
            const TensorId mean = stat(name + ".mean", {N_});
            const TensorId rstd = stat(name + ".rstd", {N_});
            op(name, OpClass::memory, {x}, {y, mean, rstd}, {x, mean, rstd});
        }
        return y;
    }

    // out = inp W^T + b; saves its input. bf16: fp32 staging of inp, W, out in forward and of
    // dout, W, inp, dinp, dW in backward.
    TensorId linear(const std::string& name, TensorId x, std::uint64_t n_out) {
        const std::uint64_t n_in = g_.tensor(x).shape.back();
        const TensorId y = act(name + ".out", {N_, n_out});
        Op o = make(name, OpClass::gemm, {x}, {y}, {x});
        o.fwd_flops = flop_product(2, N_, n_in, n_out);
        o.bwd_flops = 2 * o.fwd_flops;
        o.narrow_dim = std::min({N_, n_in, n_out});
        const double w_bytes = flop_product(n_in, n_out, dtype_bytes(act_));
        o.fwd_bytes += w_bytes;
        o.bwd_bytes += 2 * w_bytes;
        if (staged_) {
            const std::uint64_t in_elems = checked_mul(N_, n_in),
                                w_elems = checked_mul(n_out, n_in),
                                out_elems = checked_mul(N_, n_out);
            o.fwd_workspace_bytes = checked_mul(4, checked_add(in_elems, w_elems, out_elems));
            o.bwd_workspace_bytes =
                checked_mul(4, checked_add(out_elems, w_elems, checked_mul(2, in_elems), w_elems));
        }
        g_.add_op(std::move(o));
        return y;
    }

    TensorId dropout(const std::string& name, TensorId x, double p) {
        if (p <= 0.0) return x;
        const TensorId y = act(name + ".out", g_.tensor(x).shape);
        op(name, OpClass::memory, {x}, {y}, {});
        return y;
    }

    TensorId add(const std::string& name, TensorId a, TensorId b) {
        const TensorId y = act(name + ".out", g_.tensor(a).shape);
        op(name, OpClass::memory, {a, b}, {y}, {});
        return y;
    }

    TensorId rotary(const std::string& name, TensorId x) {
        const TensorId y = act(name + ".out", g_.tensor(x).shape);
        op(name, OpClass::memory, {x}, {y}, {});
        return y;
    }

    // The attention core. Inputs: GPT-2's fused qkv (one tensor, rows of 3H) or Llama's rotated
    // q, k and v. Saves its inputs, its output and the log-sum-exp (B, A, S). Workspace, fp32:
    //   CPU: per (batch, head) walked one at a time, forward the S x S probabilities plus one
    //   head's q, k, v and output rows (4 S D); backward P and dP (2 S S) plus one head's q, k,
    //   v, dout, dq, dk and dv rows (7 S D).
    //   CUDA (fused, tiles in shared memory): forward none; backward delta = rowsum(dout * out)
    //   per query row (B A S).
    TensorId attention(std::vector<TensorId> in) {
        if (attention_ == Attention::eager) return eager_attention(std::move(in));
        const std::uint64_t A = m_.n_heads, D = m_.head_dim, S = S_;
        const TensorId ctx = act("attn.core.out", {N_, checked_mul(A, D)});
        const TensorId lse = stat("attn.core.lse", {B_, A, S});
        std::vector<TensorId> saved = in;
        saved.push_back(ctx);
        saved.push_back(lse);
        Op o = make("attn.core", OpClass::attention, in, {ctx, lse}, saved);
        o.attention_core = true;
        o.narrow_dim = D;
        const double causal_pairs = flop_product(S) * (flop_product(S) + 1) / 2.0;
        o.fwd_flops = flop_product(4, B_, A, D) * causal_pairs;
        o.bwd_flops = 2.5 * o.fwd_flops;
        if (m_.attn_dropout > 0) o.dropout_elements = flop_product(B_, A) * causal_pairs;
        if (backend_ == RematBackend::cuda) {
            o.fwd_workspace_bytes = 0;
            o.bwd_workspace_bytes = checked_mul(4, B_, A, S);
        } else {
            o.fwd_workspace_bytes = cpu_attention_scratch_bytes(4, S, D, 1);
            o.bwd_workspace_bytes = cpu_attention_scratch_bytes(7, S, D, 2);
        }
        g_.add_op(std::move(o));
        return ctx;
    }

    // The eager attention core: saves its inputs and the probabilities P (B, A, S, S) in the
    // activation dtype (softmax of the fp32 scores, rounded once), not its output or lse. Its
    // products are whole S x S GEMMs (the upper triangle is computed, then masked). Workspace:
    //   CPU: the flash core's per-(batch, head) scratch, 4 (S S + 4 S D) forward and
    //   4 (2 S S + 7 S D) backward.
    //   CUDA, one batch row at a time: forward the fp32 scores (4 A S S) and the dropped
    //   probabilities as the PV operand (e A S S); backward dP in fp32 (4 A S S), the score
    //   gradients and the dropped probabilities as GEMM operands (2 e A S S) and fp32 dK and dV
    //   (8 S KV D).
    TensorId eager_attention(std::vector<TensorId> in) {
        const std::uint64_t A = m_.n_heads, KV = m_.n_kv_heads, D = m_.head_dim, S = S_;
        const TensorId ctx = act("attn.core.out", {N_, checked_mul(A, D)});
        const TensorId probs = g_.add_tensor("attn.core.probs", {B_, A, S, S}, act_, false);
        std::vector<TensorId> saved = in;
        saved.push_back(probs);
        // Its products are cuBLAS (or BLAS) GEMMs: timed at the GEMM rate, as hf-eager's bmm are.
        Op o = make("attn.core", OpClass::gemm, in, {ctx, probs}, saved);
        o.attention_core = true;
        o.fwd_flops = flop_product(4, B_, A, D, S, S);
        o.bwd_flops = 2.0 * o.fwd_flops;
        if (backend_ == RematBackend::cuda) {
            const std::uint64_t e = dtype_bytes(act_);
            const std::uint64_t ass = checked_mul(A, S, S);
            o.fwd_workspace_bytes = checked_mul(4 + e, ass);
            o.bwd_workspace_bytes =
                checked_add(checked_mul(4, ass), checked_mul(2 * e, ass), checked_mul(8, S, KV, D));
        } else {
            o.fwd_workspace_bytes = cpu_attention_scratch_bytes(4, S, D, 1);
            o.bwd_workspace_bytes = cpu_attention_scratch_bytes(7, S, D, 2);
        }
        g_.add_op(std::move(o));
        return ctx;
    }

    StageGraph& g_;
    OpBuilder ops_;
    const ModelConfig& m_;
    std::uint64_t B_, S_, N_;
    DType act_;
    RematBackend backend_;
    Attention attention_;
    bool staged_;  // bf16 GEMMs through fp32 staging (the CPU backend)
};

}  // namespace

void build_remat_stage(StageGraph& g, StageKind kind, const ModelConfig& m, std::uint64_t batch,
                       std::uint64_t seq, Precision precision, RematBackend backend,
                       Attention attention) {
    RematStage st(g, m, batch, seq, precision, backend, attention);
    TensorId out = no_tensor;
    switch (kind) {
        case StageKind::embedding:
            out = st.embedding();
            break;
        case StageKind::block:
            out = st.block();
            break;
        case StageKind::norm:
            out = st.final_norm();
            break;
        case StageKind::head:
            out = st.head();
            break;
    }
    g.finish(out);
}

}  // namespace remat
