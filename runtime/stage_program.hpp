// The runtime's model: each stage of the chain (embedding, blocks, final norm, head + loss) as a
// program of ops over named tensors, and the parameters grouped into FSDP units. The executor
// (runtime/executor) runs these programs under a Schedule; the kernels (runtime/cpu/kernels)
// do the math. Sizes come from the model config and the run's shape only: nothing here reads
// the planner's graphs or memory model.
//
//   Model<float> m = build_model<float>(config, {B, S, W, seed}, make_cpu_backend<float>());
//   m.stages[i].ops[k].forward(args);   // what the executor does, op by op: the backend's math
//
// Per stage, tensor 0.. are its tensors; `input` is the stage input (token ids, or the hidden
// state x), `output` its output (the next stage's input, or the loss). An op declares what it
// reads, writes and saves for its backward, exactly as autograd would hold them.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "planner/config/dtype.hpp"
#include "planner/config/model.hpp"
#include "planner/config/options.hpp"
#include "runtime/allocator.hpp"
#include "runtime/backend.hpp"

namespace remat::rt {

struct TensorSpec {
    std::string name;                  // "attn.core.lse"
    std::vector<std::uint64_t> shape;  // e.g. (B, A, S)
    DType dtype = DType::f32;          // f32, bf16 or i32: the types the kernels take
    bool needs_grad = true;            // false for ids, targets, statistics
    std::uint64_t numel() const;
    std::uint64_t bytes() const { return numel() * dtype_bytes(dtype); }
};

// What an op's kernels see while it runs.
struct OpArgs {
    std::vector<BufferRef>* values = nullptr;  // by tensor id; what the op reads and writes
    std::vector<BufferRef>* grads = nullptr;   // by tensor id; backward only
    void* workspace = nullptr;                 // fwd_ws / bwd_ws bytes
    const void* params = nullptr;              // the unit's gathered parameters (flat)
    void* dparams = nullptr;                   // the unit's unsharded gradients (flat), backward
    std::uint64_t step = 0;                    // dropout streams differ per step, not per recompute
    std::uint64_t row0 = 0;                    // global index of this rank's first sequence
    const std::int32_t* targets = nullptr;     // this rank's (B, S) next-token targets, on the host

    template <class X>
    X* v(int t) const {
        return (*values)[t]->as<X>();
    }
    template <class X>
    X* g(int t) const {
        return (*grads)[t]->as<X>();
    }
    template <class X>
    const X* p(std::size_t offset) const {
        return static_cast<const X*>(params) + offset;
    }
    template <class X>
    X* dp(std::size_t offset) const {
        return static_cast<X*>(dparams) + offset;
    }
};

struct ProgramOp {
    std::string name;
    std::vector<int> inputs, outputs, saved;
    bool attention_core = false;  // Megatron selective recomputation drops and reruns it
    std::uint64_t fwd_workspace_bytes = 0, bwd_workspace_bytes = 0;
    std::function<void(const OpArgs&)> forward, backward;
};

struct StageProgram {
    std::string name;  // "embedding", "block 3", "final norm", "head"
    std::size_t unit = 0;
    std::vector<TensorSpec> tensors;
    std::vector<ProgramOp> ops;
    int input = -1, output = -1;
};

enum class Init : std::uint8_t { normal, ones, zeros };
struct ParamSpec {
    std::string name;  // "block 3.attn.qkv.weight"
    std::uint64_t offset = 0, numel = 0;
    Init init = Init::normal;
};
struct UnitLayout {
    std::vector<ParamSpec> params;
    std::uint64_t numel = 0;  // unsharded elements
};

struct Shape {
    std::uint64_t batch = 1;                 // B: sequences per rank
    std::uint64_t seq = 1;                   // S
    std::uint64_t world = 1;                 // W: for the loss scale (mean over the global batch)
    std::uint64_t seed = 0;                  // dropout
    Attention attention = Attention::flash;  // the attention core the blocks run
};

// T: the storage type of activations and gathered parameters (float, or cpu::bf16).
template <class T>
struct Model {
    std::vector<StageProgram> stages;
    std::vector<UnitLayout> units;              // 0: embedding, final norm, head; k: block k
    std::shared_ptr<const Backend<T>> backend;  // what the ops call
};

// Throws InputError when the runtime cannot build m at this shape (check_buildable in
// runtime/limits.hpp: architecture, rotary fraction, head size, context).
template <class T>
Model<T> build_model(const ModelConfig& m, const Shape& shape,
                     std::shared_ptr<const Backend<T>> backend);

// Initial values of elements [begin, end) of a unit's flat parameters (GPT-2's: normal(0, 0.02)
// weights, norm weights 1, biases 0) into out. Each element is a pure function of (seed, unit,
// index), so a rank computes its shard alone and every W gives the same model.
void initial_parameters(const UnitLayout& u, std::uint64_t seed, std::size_t unit,
                        std::uint64_t begin, std::uint64_t end, float* out);

}  // namespace remat::rt
