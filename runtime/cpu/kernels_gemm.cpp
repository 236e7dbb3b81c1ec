// GEMM through OpenBLAS and torch.nn.Linear's forward and backward on top of it.
// OpenBLAS has no bf16 GEMM, so the bf16 linear converts its operands into the caller's fp32
// staging, runs sgemm and converts back; that staging is counted by the caller like any other
// buffer. This file does not pick threads or tune blocking: OpenBLAS's defaults stand.
// linear_backward accumulates (+=) into dinp, dw and dbias (kernels.hpp's convention): the
// GEMMs run with beta = 1, and the bf16 path loads the existing dinp and dw into its staging.
#include <cblas.h>

#include <algorithm>
#include <cassert>
#include <climits>

#include "runtime/cpu/kernels.hpp"

namespace remat::cpu {
namespace {

blasint blas_int(std::size_t n) {
    assert(n <= static_cast<std::size_t>(INT_MAX) &&
           "GEMM dimension does not fit OpenBLAS's 32-bit blasint");
    return static_cast<blasint>(n);
}

CBLAS_TRANSPOSE blas_trans(bool trans) { return trans ? CblasTrans : CblasNoTrans; }

// Rows of out(N, O) start as bias, so the GEMM adds onto them with beta = 1.
template <class A, class T>
void fill_rows(A* out, const T* bias, std::size_t N, std::size_t O) {
    for (std::size_t n = 0; n < N; ++n)
        for (std::size_t o = 0; o < O; ++o) out[n * O + o] = bias ? load(bias[o]) : A(0);
}

// dbias(O) += column sums of x(N, O), summed in acc_t and rounded into dbias once per call.
// Columns go in blocks so the partial sums live on the stack.
template <class T, class S>
void add_column_sums(T* dbias, const S* x, std::size_t N, std::size_t O) {
    using A = acc_t<T>;
    constexpr std::size_t block = 256;
    for (std::size_t c0 = 0; c0 < O; c0 += block) {
        const std::size_t c1 = std::min(O, c0 + block);
        A sum[block] = {};
        for (std::size_t n = 0; n < N; ++n)
            for (std::size_t o = c0; o < c1; ++o) sum[o - c0] += static_cast<A>(load(x[n * O + o]));
        for (std::size_t o = c0; o < c1; ++o) dbias[o] = store<T>(load(dbias[o]) + sum[o - c0]);
    }
}

}  // namespace

template <class T>
void gemm(bool trans_a, bool trans_b, std::size_t M, std::size_t N, std::size_t K, acc_t<T> alpha,
          const T* A, std::size_t lda, const T* B, std::size_t ldb, acc_t<T> beta, T* C,
          std::size_t ldc) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                  "gemm runs on float or double");
    if (M == 0 || N == 0) return;
    if (K == 0) {
        // BLAS rejects a leading dimension of 0; C = beta * C is all that is left to do.
        for (std::size_t i = 0; i < M; ++i)
            for (std::size_t j = 0; j < N; ++j)
                C[i * ldc + j] = beta == T(0) ? T(0) : beta * C[i * ldc + j];
        return;
    }
    if constexpr (std::is_same_v<T, float>)
        cblas_sgemm(CblasRowMajor, blas_trans(trans_a), blas_trans(trans_b), blas_int(M),
                    blas_int(N), blas_int(K), alpha, A, blas_int(lda), B, blas_int(ldb), beta, C,
                    blas_int(ldc));
    else
        cblas_dgemm(CblasRowMajor, blas_trans(trans_a), blas_trans(trans_b), blas_int(M),
                    blas_int(N), blas_int(K), alpha, A, blas_int(lda), B, blas_int(ldb), beta, C,
                    blas_int(ldc));
}

template <class T>
std::size_t linear_forward_staging(std::size_t N, std::size_t I, std::size_t O) {
    if constexpr (std::is_same_v<T, bf16>)
        return N * I + O * I + N * O;
    else
        return 0;
}

template <class T>
void linear_forward(T* out, const T* inp, const T* w, const T* bias, std::size_t N, std::size_t I,
                    std::size_t O, float* staging) {
    if constexpr (std::is_same_v<T, bf16>) {
        float* inp_f = staging;      // (N, I)
        float* w_f = inp_f + N * I;  // (O, I)
        float* out_f = w_f + O * I;  // (N, O)
        convert(inp_f, inp, N * I);
        convert(w_f, w, O * I);
        fill_rows(out_f, bias, N, O);
        gemm<float>(false, true, N, O, I, 1.0f, inp_f, I, w_f, I, 1.0f, out_f, O);
        convert_back(out, out_f, N * O);
    } else {
        (void)staging;
        fill_rows(out, bias, N, O);
        gemm<T>(false, true, N, O, I, T(1), inp, I, w, I, T(1), out, O);
    }
}

template <class T>
std::size_t linear_backward_staging(std::size_t N, std::size_t I, std::size_t O) {
    if constexpr (std::is_same_v<T, bf16>)
        return N * O + O * I + N * I + N * I + O * I;
    else
        return 0;
}

template <class T>
void linear_backward(T* dinp, T* dw, T* dbias, const T* dout, const T* inp, const T* w,
                     std::size_t N, std::size_t I, std::size_t O, float* staging) {
    if constexpr (std::is_same_v<T, bf16>) {
        float* dout_f = staging;        // (N, O)
        float* w_f = dout_f + N * O;    // (O, I)
        float* inp_f = w_f + O * I;     // (N, I)
        float* dinp_f = inp_f + N * I;  // (N, I)
        float* dw_f = dinp_f + N * I;   // (O, I)
        convert(dout_f, dout, N * O);
        convert(w_f, w, O * I);
        convert(inp_f, inp, N * I);
        convert(dinp_f, dinp, N * I);
        convert(dw_f, dw, O * I);
        gemm<float>(false, false, N, I, O, 1.0f, dout_f, O, w_f, I, 1.0f, dinp_f, I);
        gemm<float>(true, false, O, I, N, 1.0f, dout_f, O, inp_f, I, 1.0f, dw_f, I);
        convert_back(dinp, dinp_f, N * I);
        convert_back(dw, dw_f, O * I);
        if (dbias) add_column_sums(dbias, dout_f, N, O);
    } else {
        (void)staging;
        gemm<T>(false, false, N, I, O, T(1), dout, O, w, I, T(1), dinp, I);
        gemm<T>(true, false, O, I, N, T(1), dout, O, inp, I, T(1), dw, I);
        if (dbias) add_column_sums(dbias, dout, N, O);
    }
}

template void gemm<float>(bool, bool, std::size_t, std::size_t, std::size_t, float, const float*,
                          std::size_t, const float*, std::size_t, float, float*, std::size_t);
template void gemm<double>(bool, bool, std::size_t, std::size_t, std::size_t, double, const double*,
                           std::size_t, const double*, std::size_t, double, double*, std::size_t);

#define REMAT_INSTANTIATE(T)                                                                    \
    template std::size_t linear_forward_staging<T>(std::size_t, std::size_t, std::size_t);      \
    template void linear_forward<T>(T*, const T*, const T*, const T*, std::size_t, std::size_t, \
                                    std::size_t, float*);                                       \
    template std::size_t linear_backward_staging<T>(std::size_t, std::size_t, std::size_t);     \
    template void linear_backward<T>(T*, T*, T*, const T*, const T*, const T*, std::size_t,     \
                                     std::size_t, std::size_t, float*);
REMAT_INSTANTIATE(float)
REMAT_INSTANTIATE(bf16)
REMAT_INSTANTIATE(double)
#undef REMAT_INSTANTIATE

}  // namespace remat::cpu
