// The question a runtime test asks (tests/runtime_test.cpp on the CPU, tests/gpu on CUDA): a
// model on the h100-80gb preset at B, S and W ranks under FSDP, answered for `device` by
// runtime_question, which drops the reserve on the CPU and keeps the preset's on CUDA.
#pragma once
#include <cstdint>
#include <string>

#include "planner/simulate/gpu.hpp"
#include "planner/simulate/memory.hpp"
#include "tools/validation.hpp"

namespace remat::test {

inline Question runtime_test_question(rt::Device device, const std::string& model, std::uint64_t B,
                                      std::uint64_t S, std::uint64_t W, Precision precision,
                                      Attention attention) {
    Question q;
    q.model = load_model(model);
    q.gpu = load_gpu("h100-80gb");
    q.options.micro_batch = B;
    q.options.seq = S;
    q.options.world_size = W;
    q.options.precision = precision;
    q.options.sharding = Sharding::fsdp;
    q.options.attention = attention;
    q.context.capacity_bytes = q.gpu.capacity_bytes;
    q.context.reserve = default_reserve(q.gpu);
    return cli::runtime_question(q, device);
}

// The GPU maximum-micro-batch test's question (tests/gpu/runtime_gpu_test.cpp) at capacity
// `cap`: gpt2-xl at seq 1024, rank 0 of 8 (emulated), bf16-mixed, no fragmentation term. W 8,
// because at W 1 not one sequence fits in 24 GiB (the test could only fail); the CPU suite
// checks that each capacity has a micro-batch that fits (tests/runtime_test.cpp).
inline Question gpu_max_batch_question(const std::string& cap) {
    Question q = runtime_test_question(rt::Device::cuda, "gpt2-xl", 1, 1024, 8,
                                       Precision::bf16_mixed, Attention::flash);
    q.context.capacity_bytes = parse_bytes(cap, "--gpu-memory");
    q.context.reserve.fragmentation = 0;
    return q;
}

}  // namespace remat::test
