#include "planner/graph/graph.hpp"

#include <fmt/format.h>

#include <cassert>
#include <iterator>
#include <set>

#include "planner/config/checked.hpp"

namespace remat {

std::uint64_t Tensor::numel() const {
    std::uint64_t n = 1;
    for (auto d : shape) n = checked_mul(n, d);
    return n;
}

std::uint64_t Tensor::bytes() const { return checked_mul(numel(), dtype_bytes(dtype)); }

TensorId StageGraph::push(Tensor t) {
    // Every tensor's size is counted once here, so an overflow names the tensor it is in.
    try {
        (void)t.bytes();
    } catch (const SizeOverflow&) {
        throw SizeOverflow(fmt::format("tensor '{}' of shape ({}) {} has more than 2^63 - 1 bytes",
                                       t.name, fmt::join(t.shape, ", "), dtype_name(t.dtype)));
    }
    tensors_.push_back(std::move(t));
    producer_.push_back(-1);
    return static_cast<TensorId>(tensors_.size() - 1);
}

int StageGraph::producer(TensorId t) const { return producer_[storage(t)]; }

TensorId StageGraph::add_input(std::string name, std::vector<std::uint64_t> shape, DType dtype,
                               bool needs_grad) {
    TensorId id = push({std::move(name), std::move(shape), dtype, no_tensor, needs_grad, false});
    inputs_.push_back(id);
    return id;
}

TensorId StageGraph::add_shared_input(std::string name, std::vector<std::uint64_t> shape,
                                      DType dtype) {
    TensorId id = push({std::move(name), std::move(shape), dtype, no_tensor, false, true});
    inputs_.push_back(id);
    return id;
}

TensorId StageGraph::add_tensor(std::string name, std::vector<std::uint64_t> shape, DType dtype,
                                bool needs_grad) {
    return push({std::move(name), std::move(shape), dtype, no_tensor, needs_grad, false});
}

TensorId StageGraph::add_view(std::string name, TensorId of, std::vector<std::uint64_t> shape) {
    // Copied out before push grows tensors_.
    const DType dtype = tensors_[of].dtype;
    const bool needs_grad = tensors_[of].needs_grad, shared = tensors_[of].shared;
    return push({std::move(name), std::move(shape), dtype, of, needs_grad, shared});
}

TensorId StageGraph::storage(TensorId t) const {
    while (tensors_[t].view_of != no_tensor) t = tensors_[t].view_of;
    return t;
}

OpVertex StageGraph::add_op(Op op) {
    const OpVertex v = boost::add_vertex(op, graph_);
    for (TensorId in : graph_[v].held) {
        (void)in;
        assert(in < tensors_.size() && "a held tensor must be a known tensor");
    }
    for (TensorId in : graph_[v].inputs) {
        assert(in < tensors_.size() && "op input must be a known tensor");
        // A view is produced by whoever produced its storage.
        const int from = producer_[storage(in)];
        if (from >= 0) boost::add_edge(static_cast<OpVertex>(from), v, TensorEdge{in}, graph_);
    }
    for (TensorId out : graph_[v].outputs) {
        assert(producer_[out] < 0 && "a tensor has one producer");
        producer_[out] = static_cast<int>(v);
    }
    return v;
}

void StageGraph::finish(TensorId output) {
    output_ = output;
    // Program order: ops run in the order the profile wrote them, as eager code runs them (a
    // topological sort would be free to move an op with no inputs, which moves a peak). add_op
    // only accepts produced inputs, so this order is topological.
    order_.resize(boost::num_vertices(graph_));
    for (std::size_t v = 0; v < order_.size(); ++v) order_[v] = static_cast<OpVertex>(v);
}

std::vector<TensorId> StageGraph::saved_storages() const {
    std::set<TensorId> unique;
    for (OpVertex v : order_)
        for (TensorId t : graph_[v].saved) {
            const TensorId s = storage(t);
            if (!tensors_[s].shared) unique.insert(s);
        }
    return {unique.begin(), unique.end()};
}

std::uint64_t StageGraph::saved_bytes() const {
    std::uint64_t total = 0;
    for (TensorId s : saved_storages()) add_to(total, tensors_[s].bytes());
    return total;
}

double StageGraph::fwd_flops() const {
    double f = 0;
    for (OpVertex v : order_) f += graph_[v].fwd_flops;
    return f;
}

double StageGraph::bwd_flops() const {
    double f = 0;
    for (OpVertex v : order_) f += graph_[v].bwd_flops;
    return f;
}

const char* kernel_name(KernelClass k) {
    switch (k) {
        case KernelClass::gemm:
            return "gemm";
        case KernelClass::attention:
            return "attention";
        case KernelClass::norm:
            return "norm";
        case KernelClass::elementwise:
            return "elementwise";
        case KernelClass::dropout:
            return "dropout";
        case KernelClass::gelu:
            return "gelu";
        case KernelClass::activation:
            return "activation";
        case KernelClass::rotary:
            return "rotary";
        case KernelClass::softmax:
            return "softmax";
        case KernelClass::embedding:
            return "embedding";
    }
    return "elementwise";
}

KernelClass classify_kernel(OpClass c, const std::string& name) {
    if (c == OpClass::gemm) return KernelClass::gemm;
    if (c == OpClass::attention) return KernelClass::attention;
    // The op's own name is its last dotted part ("mlp.gelu" -> "gelu"), but norms are named by
    // module ("ln_1", "input_norm", "input_layernorm").
    const std::string last =
        name.substr(name.rfind('.') == std::string::npos ? 0 : name.rfind('.') + 1);
    auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
    auto own = [&](const char* s) { return last.find(s) != std::string::npos; };
    if (own("cross_entropy") || own("softmax") || own("nll")) return KernelClass::softmax;
    if (own("rope") || own("rotary")) return KernelClass::rotary;
    if (own("gelu")) return KernelClass::gelu;
    if (own("silu") || own("swiglu") || own("tanh") || own("sigmoid") || own("act"))
        return KernelClass::activation;
    if (own("drop")) return KernelClass::dropout;
    if (own("embedding") || own("wte") || own("wpe") || own("embed_tokens"))
        return KernelClass::embedding;
    if (own("norm") || own("ln_") || last == "ln" || (has("norm") && last == name))
        return KernelClass::norm;
    return KernelClass::elementwise;
}

}  // namespace remat
