// The question a runtime test asks (tests/runtime_test.cpp on the CPU, tests/gpu on CUDA): a
// model on the h100-80gb preset at B, S and W ranks under FSDP, answered for `device` by
// runtime_question, which drops the reserve on the CPU and keeps the preset's on CUDA.
#pragma once
#include <cstdint>
#include <string>

#include "planner/memory.hpp"
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

}  // namespace remat::test
