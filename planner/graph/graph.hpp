// Op-level dataflow graph of one stage (a block, the embedding, the final norm, head + loss).
// Nodes are ops with forward/backward FLOPs and bytes moved and the tensors they save for
// backward; edges are tensors (shape, dtype) from producer to consumer. Built by the profiles
// (planner/graph/profiles.hpp), read by the chain, the simulator and the DOT writer.
//
//   StageGraph g;
//   TensorId x = g.add_input("x", {B, S, H}, DType::f32);
//   Op ln{.name = "ln_1", .op_class = OpClass::memory};
//   ln.inputs = {x}; ln.saved = {x};
//   TensorId y = g.add_tensor("ln_1.out", {B, S, H}, DType::f32);
//   ln.outputs = {y};
//   g.add_op(std::move(ln));
//   g.finish(y);   // program order (the order ops were added), consumer counts
//
// It does not decide what a stage keeps under a strategy: that is the Schedule's job.
#pragma once
#include <boost/graph/adjacency_list.hpp>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "planner/config/dtype.hpp"

namespace remat {

using TensorId = std::uint32_t;
inline constexpr TensorId no_tensor = ~TensorId{0};

struct Tensor {
    std::string name;                  // "attn.probs"
    std::vector<std::uint64_t> shape;  // e.g. (B, A, S, S)
    DType dtype = DType::f32;
    TensorId view_of = no_tensor;  // a view counts as its storage
    bool needs_grad = true;        // false for masks, indices, statistics
    // Shared across stages (rotary cos/sin): produced once by the embedding stage, so a block
    // that saves it adds no bytes of its own.
    bool shared = false;

    std::uint64_t numel() const;  // checked (planner/config/checked.hpp)
    std::uint64_t bytes() const;
};

// What limits an op's speed in the step-time model.
enum class OpClass : std::uint8_t { gemm, attention, memory };

// The kind of kernel an op runs, for a calibration's per-kernel timings (docs/step-time.md):
// GEMMs, the attention core, norms, plain elementwise ops (adds, copies, casts), dropout (a
// random draw per element), GELU (tanh), the other activations (SiLU/SwiGLU, sigmoid), rotary
// embeddings, softmax and cross-entropy over rows, the embedding lookup.
enum class KernelClass : std::uint8_t {
    gemm,
    attention,
    norm,
    elementwise,
    dropout,
    gelu,
    activation,
    rotary,
    softmax,
    embedding
};
// Its name in calibration files and tables: "gemm", "attention", "norm", ...
const char* kernel_name(KernelClass k);
// An op's kernel from its class and name (one home for the rule; op_builder applies it).
KernelClass classify_kernel(OpClass c, const std::string& op_name);

struct Op {
    std::string name;  // "attn.c_attn"
    OpClass op_class = OpClass::memory;
    std::vector<TensorId> inputs;   // activations read (parameters are not tensors here)
    std::vector<TensorId> outputs;  // activations written
    std::vector<TensorId> saved;    // kept for backward (inputs, outputs or internal)
    // Kept alive until this op by the code around it (a Python local), neither read nor given
    // a gradient here: the head's low-precision logits, held while the loss runs.
    std::vector<TensorId> held;
    double fwd_flops = 0, bwd_flops = 0;
    double fwd_bytes = 0, bwd_bytes = 0;    // memory traffic
    std::uint64_t fwd_workspace_bytes = 0;  // scratch alive only while the op runs
    std::uint64_t bwd_workspace_bytes = 0;
    // Megatron's selective recomputation drops and recomputes these ops' internals.
    bool attention_core = false;
    KernelClass kernel = KernelClass::elementwise;
    // The dimension a kernel's efficiency depends on most: a GEMM's smallest of rows, K and N;
    // attention's head dimension. 0: not known (the calibration's largest measured class).
    std::uint64_t narrow_dim = 0;
    // Dropout draws inside the kernel (attention's probabilities): timed as the dropout kernel
    // over that many elements, forward and again in backward (the mask is regenerated).
    double dropout_elements = 0;
};

struct TensorEdge {
    TensorId tensor = no_tensor;
};

using OpGraph =
    boost::adjacency_list<boost::vecS, boost::vecS, boost::bidirectionalS, Op, TensorEdge>;
using OpVertex = boost::graph_traits<OpGraph>::vertex_descriptor;

class StageGraph {
  public:
    TensorId add_input(std::string name, std::vector<std::uint64_t> shape, DType dtype,
                       bool needs_grad = true);
    // An input made once per step and shared by every block (rotary cos/sin): no bytes here.
    TensorId add_shared_input(std::string name, std::vector<std::uint64_t> shape, DType dtype);
    TensorId add_tensor(std::string name, std::vector<std::uint64_t> shape, DType dtype,
                        bool needs_grad = true);
    TensorId add_view(std::string name, TensorId of, std::vector<std::uint64_t> shape);
    // Inputs must already be produced (or be a stage input); outputs must be fresh.
    OpVertex add_op(Op op);
    void finish(TensorId output);  // fixes the run order: program order, which is topological

    const OpGraph& graph() const { return graph_; }
    const Op& op(OpVertex v) const { return graph_[v]; }
    const std::vector<Tensor>& tensors() const { return tensors_; }
    const Tensor& tensor(TensorId t) const { return tensors_[t]; }
    TensorId storage(TensorId t) const;  // follows view_of to the owner
    const std::vector<TensorId>& inputs() const { return inputs_; }
    TensorId input() const { return inputs_.front(); }  // the chain input (x)
    TensorId output() const { return output_; }
    const std::vector<OpVertex>& order() const { return order_; }  // program order
    int producer(TensorId t) const;  // of t's storage; -1 for stage inputs
    std::size_t n_ops() const { return boost::num_vertices(graph_); }

    // Unique storages saved by ops (a storage saved twice counts once; shared ones excluded).
    std::vector<TensorId> saved_storages() const;
    std::uint64_t saved_bytes() const;
    double fwd_flops() const;
    double bwd_flops() const;

  private:
    TensorId push(Tensor t);
    OpGraph graph_;
    std::vector<Tensor> tensors_;
    std::vector<int> producer_;
    std::vector<TensorId> inputs_;
    TensorId output_ = no_tensor;
    std::vector<OpVertex> order_;
};

}  // namespace remat
