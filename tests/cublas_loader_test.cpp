// cuBLAS is loaded on first use, not linked (runtime/cuda/cublas_loader.cpp): the forwarders
// must reach the real library. Needs no GPU: status strings live in the library itself.
#include <doctest/doctest.h>

#ifdef REMAT_HAVE_CUDA
#include <cublas_v2.h>

#include <string>

TEST_CASE("cuda::cuBLAS is loaded on first use and its entry points forward") {
    // The library's own strings (cuBLAS 13: "success", "the requested functionality is not
    // supported"), not the loader's "cannot load libcublas.so.13: ...".
    const std::string ok = cublasGetStatusString(CUBLAS_STATUS_SUCCESS);
    const std::string unsupported = cublasGetStatusString(CUBLAS_STATUS_NOT_SUPPORTED);
    CHECK(ok.find("cannot load") == std::string::npos);
    CHECK_FALSE(ok.empty());
    CHECK(unsupported != ok);
}
#endif
