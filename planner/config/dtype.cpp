#include "planner/config/dtype.hpp"

namespace remat {

std::uint64_t dtype_bytes(DType d) {
    switch (d) {
        case DType::f32:
            return 4;
        case DType::bf16:
        case DType::f16:
            return 2;
        case DType::i64:
            return 8;
        case DType::i32:
            return 4;
        case DType::u8:
        case DType::b8:
            return 1;
    }
    return 0;
}

std::string_view dtype_name(DType d) {
    switch (d) {
        case DType::f32:
            return "float32";
        case DType::bf16:
            return "bfloat16";
        case DType::f16:
            return "float16";
        case DType::i64:
            return "int64";
        case DType::i32:
            return "int32";
        case DType::u8:
            return "uint8";
        case DType::b8:
            return "bool";
    }
    return "?";
}

}  // namespace remat
