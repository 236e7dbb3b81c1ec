// Types every backend shares: bf16 storage, the arithmetic type of a storage type, and the
// parameter structs of dropout, attention and AdamW. No math here: the kernels are per backend
// (runtime/cpu/kernels.hpp; CUDA next).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

// Functions both a host compiler and nvcc compile (the CUDA kernels draw the same dropout masks).
#if defined(__CUDACC__)
#define REMAT_HD __host__ __device__
#else
#define REMAT_HD
#endif

namespace remat::rt {

// bfloat16 storage: the upper 16 bits of an IEEE float, rounded to nearest even.
struct bf16 {
    std::uint16_t bits = 0;
};
inline float to_float(bf16 x) {
    const std::uint32_t u = std::uint32_t{x.bits} << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}
inline bf16 to_bf16(float f) {
    std::uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu))
        return bf16{static_cast<std::uint16_t>((u >> 16) | 0x40)};  // NaN stays NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return bf16{static_cast<std::uint16_t>(u >> 16)};
}

template <class T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Load and store between a storage type and its arithmetic type.
template <class T>
inline acc_t<T> load(T x) {
    if constexpr (std::is_same_v<T, bf16>)
        return to_float(x);
    else
        return x;
}
template <class T>
inline T store(acc_t<T> x) {
    if constexpr (std::is_same_v<T, bf16>)
        return to_bf16(x);
    else
        return x;
}

// splitmix64's finalizer: a bijection on 64 bits whose output bits each depend on all input bits.
REMAT_HD constexpr std::uint64_t mix64(std::uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// Counter-based uniform in [0, 1): a pure function of (seed, stream, index), so every backend,
// rank and recomputation draws the same number for the same element. Chaining the mix keeps
// triples apart that a plain xor would merge; the top 24 bits are exact in a float.
REMAT_HD inline float uniform01(std::uint64_t seed, std::uint64_t stream, std::uint64_t index) {
    const std::uint64_t h = mix64(mix64(mix64(seed) ^ stream) ^ index);
    return static_cast<float>(h >> 40) * 0x1.0p-24f;
}

// Dropout's random stream: `stream` names the op and step, `index0` places this call's first
// element in the global batch (see each kernel for its indexing).
struct DropoutKey {
    float p = 0;  // drop probability; 0: identity
    std::uint64_t seed = 0;
    std::uint64_t stream = 0;
    std::uint64_t index0 = 0;  // global index of element 0 of this call
};

// Whether dropout with probability p keeps element `index` of (seed, stream): every backend,
// rank and recomputation decides alike.
REMAT_HD inline bool dropout_keep(std::uint64_t seed, std::uint64_t stream, std::uint64_t index,
                                  float p) {
    return uniform01(seed, stream, index) >= p;
}

// What dropout multiplies element `index` by: 0 when dropped, keep = 1 / (1 - p) when kept.
template <class A>
REMAT_HD inline A dropout_factor(const DropoutKey& key, std::uint64_t index, A keep) {
    if (key.p == 0.0f) return A(1);
    return dropout_keep(key.seed, key.stream, index, key.p) ? keep : A(0);
}

// Causal attention over q(B, S, A, D) and k, v (B, S, KV, D); each tensor's rows start
// `*_stride` elements apart (3*H for GPT-2's fused qkv).
struct AttentionShape {
    std::size_t B, S, A, KV, D;
    std::size_t q_stride, k_stride, v_stride;
};

// AdamW (decoupled weight decay), as torch.optim.AdamW.
struct AdamW {
    double lr = 1e-3, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
};

}  // namespace remat::rt
