// The element types of tensors, one enum for the planner's op graphs (planner/graph) and the
// runtime's stage programs (runtime/stage_program), with each type's size and the name PyTorch
// prints for it. The runtime builds its tensors in f32, bf16 and i32 only.
//
//   dtype_bytes(DType::bf16)   // 2
//   dtype_name(DType::b8)      // "bool"
#pragma once
#include <cstdint>
#include <string_view>

namespace remat {

enum class DType : std::uint8_t { f32, bf16, f16, i64, i32, u8, b8 };
std::uint64_t dtype_bytes(DType d);
std::string_view dtype_name(DType d);  // "float32", "bfloat16", ... as PyTorch prints them

}  // namespace remat
