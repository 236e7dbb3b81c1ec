// cuBLAS, loaded when first used. libcublas and libcublasLt are over half a gigabyte; linking
// them made every `remat` command, `remat plan` included, spend about 0.4 s in the dynamic
// loader. This file defines the few cuBLAS entry points the backend calls (C linkage, the
// names cublas_v2.h maps to) and forwards each to the real library, which it dlopen()s on the
// first call. Without the library, every call returns CUBLAS_STATUS_NOT_INITIALIZED and the
// status string says what was not found.
#include <cublas_v2.h>
#include <dlfcn.h>

#include <mutex>
#include <string>

namespace {

struct Library {
    void* handle = nullptr;
    std::string error;
};

const Library& cublas() {
    static Library lib;
    static std::once_flag once;
    std::call_once(once, [] {
        for (const char* name :
             {REMAT_CUBLAS_DIR "/libcublas.so.13", "libcublas.so.13", "libcublas.so"}) {
            lib.handle = dlopen(name, RTLD_NOW | RTLD_LOCAL);
            if (lib.handle) return;
        }
        const char* e = dlerror();
        lib.error = std::string("cannot load libcublas.so.13: ") + (e ? e : "not found");
    });
    return lib;
}

// The real function `name` of type F, or null.
template <class F>
F real(const char* name) {
    const Library& lib = cublas();
    return lib.handle ? reinterpret_cast<F>(dlsym(lib.handle, name)) : nullptr;
}

}  // namespace

#define REMAT_FORWARD(ret, name, params, args)               \
    extern "C" ret name params {                             \
        using Fn = ret(*) params;                            \
        static const Fn fn = real<Fn>(#name);                \
        return fn ? fn args : CUBLAS_STATUS_NOT_INITIALIZED; \
    }

REMAT_FORWARD(cublasStatus_t, cublasCreate_v2, (cublasHandle_t * handle), (handle))
REMAT_FORWARD(cublasStatus_t, cublasDestroy_v2, (cublasHandle_t handle), (handle))
REMAT_FORWARD(cublasStatus_t, cublasSetStream_v2, (cublasHandle_t handle, cudaStream_t stream),
              (handle, stream))
REMAT_FORWARD(cublasStatus_t, cublasSetPointerMode_v2,
              (cublasHandle_t handle, cublasPointerMode_t mode), (handle, mode))
REMAT_FORWARD(cublasStatus_t, cublasGetMathMode, (cublasHandle_t handle, cublasMath_t* mode),
              (handle, mode))
REMAT_FORWARD(cublasStatus_t, cublasSetMathMode, (cublasHandle_t handle, cublasMath_t mode),
              (handle, mode))
REMAT_FORWARD(cublasStatus_t, cublasGemmEx,
              (cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
               int n, int k, const void* alpha, const void* A, cudaDataType Atype, int lda,
               const void* B, cudaDataType Btype, int ldb, const void* beta, void* C,
               cudaDataType Ctype, int ldc, cublasComputeType_t computeType, cublasGemmAlgo_t algo),
              (handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype,
               ldc, computeType, algo))

REMAT_FORWARD(cublasStatus_t, cublasGemmStridedBatchedEx,
              (cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
               int n, int k, const void* alpha, const void* A, cudaDataType Atype, int lda,
               long long int strideA, const void* B, cudaDataType Btype, int ldb,
               long long int strideB, const void* beta, void* C, cudaDataType Ctype, int ldc,
               long long int strideC, int batchCount, cublasComputeType_t computeType,
               cublasGemmAlgo_t algo),
              (handle, transa, transb, m, n, k, alpha, A, Atype, lda, strideA, B, Btype, ldb,
               strideB, beta, C, Ctype, ldc, strideC, batchCount, computeType, algo))

extern "C" const char* cublasGetStatusString(cublasStatus_t status) {
    using Fn = const char* (*)(cublasStatus_t);
    static const Fn fn = real<Fn>("cublasGetStatusString");
    if (fn) return fn(status);
    return cublas().error.empty() ? "cuBLAS status string unavailable" : cublas().error.c_str();
}
