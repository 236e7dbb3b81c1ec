#include "planner/graph/op_builder.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cassert>

#include "planner/config/checked.hpp"
#include "planner/config/finetune.hpp"

namespace remat {

DTypePolicy dtype_policy(Precision p, AutocastDevice device) {
    switch (p) {
        case Precision::fp32:
            return {false, DType::f32, DType::f32, device};
        case Precision::bf16_mixed:
            return {true, DType::bf16, DType::f32, device};
        case Precision::fp16_mixed:
            return {true, DType::f16, DType::f32, device};
        case Precision::bf16:
            return {false, DType::bf16, DType::bf16, device};
    }
    return {};
}

DTypePolicy dtype_policy(const StageRequest& r) {
    DTypePolicy p = dtype_policy(r.precision, r.autocast_device);
    if (r.train == Training::full) return p;
    p.param = r.base_float;
    if (!p.autocast) p.low = p.param;
    return p;
}

DType OpBuilder::promote(DType a, DType b) {
    if (a == b) return a;
    if (a == DType::f32 || b == DType::f32) return DType::f32;
    return DType::f32;  // bf16 with f16 promotes to f32 in PyTorch
}

std::uint64_t OpBuilder::rows(TensorId t) const {
    const auto& s = shape(t);
    std::uint64_t r = 1;
    for (std::size_t i = 0; i + 1 < s.size(); ++i) r = checked_mul(r, s[i]);
    return r;
}

Op OpBuilder::make(const std::string& name, OpClass c, std::vector<TensorId> in,
                   std::vector<TensorId> out, std::vector<TensorId> saved) {
    Op op;
    op.name = name;
    op.op_class = c;
    op.kernel = classify_kernel(c, name);
    op.inputs = std::move(in);
    op.outputs = std::move(out);
    op.saved = std::move(saved);
    // Default traffic for memory-bound ops: read inputs, write outputs; backward roughly twice.
    for (TensorId t : op.inputs) op.fwd_bytes += static_cast<double>(bytes(t));
    for (TensorId t : op.outputs) op.fwd_bytes += static_cast<double>(bytes(t));
    op.bwd_bytes = 2 * op.fwd_bytes;
    return op;
}

TensorId OpBuilder::copy(const std::string& name, TensorId x, DType to, Shape s) {
    if (s.empty()) s = shape(x);
    const TensorId y = g_.add_tensor(name, std::move(s), to, g_.tensor(x).needs_grad);
    g_.add_op(make(name, OpClass::memory, {x}, {y}, {}));
    return y;
}

TensorId OpBuilder::cast(const std::string& name, TensorId x, DType to) {
    return dtype(x) == to ? x : copy(name, x, to);
}

TensorId OpBuilder::view(const std::string& name, TensorId x, Shape s) {
    return g_.add_view(name, x, std::move(s));
}

TensorId OpBuilder::gemm_operand(const std::string& name, TensorId x) {
    // Autocast casts activations afresh for every use (only leaf weights are cached).
    return p_.autocast ? cast(name, x, p_.low) : x;
}

TensorId OpBuilder::gemm(const std::string& name, TensorId x, std::uint64_t n_out, bool trainable) {
    // The GEMM runs on x flattened to (rows, K) and saves that for the weight gradient.
    const TensorId xin = gemm_operand(name + ".input", x);
    Shape s = shape(x);
    const std::uint64_t k = s.back();
    s.back() = n_out;
    const TensorId flat = view(name + ".input", xin, {rows(x), k});
    const TensorId y = g_.add_tensor(name + ".output", s, p_.autocast ? p_.low : dtype(x));
    Op op = make(name, OpClass::gemm, {flat}, {y},
                 trainable ? std::vector<TensorId>{flat} : std::vector<TensorId>{});
    op.fwd_flops = flop_product(2, rows(x), k, n_out);
    op.narrow_dim = std::min({rows(x), k, n_out});
    // grad input, and grad weight when the weight trains
    op.bwd_flops = (trainable ? 2 : 1) * op.fwd_flops;
    // The weight is read once per pass: at small batch this makes the GEMM memory-bound.
    const double weight_bytes = flop_product(k, n_out, dtype_bytes(dtype(xin)));
    op.fwd_bytes += weight_bytes;
    op.bwd_bytes += (trainable ? 2 : 1) * weight_bytes;
    g_.add_op(std::move(op));
    return y;
}

TensorId OpBuilder::linear(const std::string& name, TensorId x, std::uint64_t n_out,
                           WeightCast cast) {
    if (!w_.frozen) return gemm(name, x, n_out, true);
    const TensorId base = w_.quantized_linears() ? quantized_linear(name, x, n_out)
                                                 : frozen_linear(name, x, n_out, cast);
    if (!w_.lora || !lora_targets(*w_.lora, name)) return base;
    return lora_branch(name, x, base, n_out);
}

TensorId OpBuilder::frozen_linear(const std::string& name, TensorId x, std::uint64_t n_out,
                                  WeightCast cast) {
    if (cast == WeightCast::by_linear && frozen_weight_copied()) {
        // mm saves its other operand for the input's gradient: here the weight's fresh copy.
        const TensorId w = g_.add_tensor(fmt::format("{}.weight@{}", name, dtype_name(p_.low)),
                                         {n_out, shape(x).back()}, p_.low, false);
        g_.add_op(make(name + ".weight_cast", OpClass::memory, {}, {w}, {w}));
    }
    return gemm(name, x, n_out, false);
}

TensorId OpBuilder::quantized_linear(const std::string& name, TensorId x, std::uint64_t n_out) {
    // bitsandbytes computes in the compute dtype (bnb_4bit_compute_dtype; LLM.int8 in fp16),
    // here the precision's GEMM dtype, and returns the input's dtype.
    const DType in = dtype(x);
    const std::uint64_t k = shape(x).back(), m = rows(x);
    const std::uint64_t weight = checked_mul(k, n_out);
    Shape s = shape(x);
    s.back() = n_out;
    Op op;
    if (w_.storage == BaseDType::nf4) {
        // nn/modules.py Linear4bit.forward: x.to(compute_dtype), bnb.matmul_4bit(...)
        // .to(inp_dtype). autograd/_functions.py MatMul4Bit saves only the packed weight; at
        // training's row counts (over 1536) backends/cuda/ops.py's gemm_4bit takes
        // _dequant_linear_fallback: the weight dequantized to the compute dtype (with the
        // double-quantized absmax first restored in fp32), then F.linear. Backward dequantizes
        // it again for grad_A.
        const DType c = p_.low;
        const TensorId xc = cast(name + ".input_compute", x, c);
        const TensorId y = g_.add_tensor(name + ".output", s, c);
        op = make(name, OpClass::gemm, {xc}, {y}, {});
        const std::uint64_t absmax =
            w_.lora && w_.lora->double_quant ? checked_mul(4, ceil_div(weight, 64)) : 0;
        op.fwd_workspace_bytes = checked_add(checked_mul(dtype_bytes(c), weight), absmax);
        op.bwd_workspace_bytes = checked_mul(dtype_bytes(c), weight);
        op.fwd_flops = flop_product(2, m, k, n_out);
        op.bwd_flops = op.fwd_flops;
        g_.add_op(std::move(op));
        return cast(name + ".output_input_dtype", y, in);
    }
    // nn/modules.py Linear8bitLt -> autograd/_functions.py MatMul8bitLt: A (rows x K) is
    // quantized row-wise from an fp16 copy (int8 CA, fp32 SCA) and multiplied by the int8
    // weight, the output dequantized to A's dtype. With A requiring grad it saves A itself (and
    // the outlier columns subA, data-dependent, left out); backward dequantizes the weight into
    // A's dtype (CB.to(dtype_A).mul_(SCB)) for grad_A.
    const TensorId flat = view(name + ".input", x, {m, k});
    const TensorId y = g_.add_tensor(name + ".output", s, in);
    op = make(name, OpClass::gemm, {flat}, {y}, {flat});
    const std::uint64_t a16 = in == DType::f16 ? 0 : checked_mul(2, m, k);
    op.fwd_workspace_bytes = checked_add(a16, checked_mul(m, k), checked_mul(4, m));
    op.bwd_workspace_bytes = checked_mul(dtype_bytes(in), weight);
    op.fwd_flops = flop_product(2, m, k, n_out);
    op.bwd_flops = op.fwd_flops;
    g_.add_op(std::move(op));
    return y;
}

TensorId OpBuilder::lora_branch(const std::string& name, TensorId x, TensorId base,
                                std::uint64_t n_out) {
    const DType result_t = dtype(base);
    if (w_.quantized_linears()) {
        // peft/tuners/lora/bnb.py Linear8bitLt/Linear4bit.forward: 4-bit clones the base
        // result; x is cast to the adapters' fp32 only outside CUDA autocast
        // (requires_conversion = not torch.is_autocast_enabled()), and the product cast back
        // before it is added.
        if (w_.storage == BaseDType::nf4) base = copy(name + ".result_clone", base, result_t);
        const bool convert = !p_.autocast;
        TensorId scaled =
            lora_product(name, convert ? cast(name + ".lora_input", x, DType::f32) : x, n_out);
        if (convert) scaled = cast(name + ".lora_output", scaled, result_t);
        return add(name + ".lora_add", base, scaled);
    }
    // peft/tuners/lora/layer.py Linear.forward: x = self._cast_input_dtype(x, lora_A.weight
    // .dtype) (the adapters are fp32: a copy unless x is fp32); result + lora_B(lora_A(
    // dropout(x))) * scaling (a Python scalar: nothing saved); result.to(torch_result_dtype).
    const TensorId scaled = lora_product(name, cast(name + ".lora_input", x, DType::f32), n_out);
    return cast(name + ".lora_result", add(name + ".lora_add", base, scaled), result_t);
}

TensorId OpBuilder::lora_product(const std::string& name, TensorId x, std::uint64_t n_out) {
    // lora_B(lora_A(dropout(x))) * scaling, as both PEFT layers write it.
    const LoraOptions& l = *w_.lora;
    const TensorId a =
        gemm(name + ".lora_A", dropout(name + ".lora_dropout", x, l.dropout), l.rank, true);
    const TensorId bo = gemm(name + ".lora_B", a, n_out, true);
    const TensorId scaled = g_.add_tensor(name + ".lora_scaled", shape(bo), dtype(bo));
    g_.add_op(make(name + ".lora_scaling", OpClass::memory, {bo}, {scaled}, {}));
    return scaled;
}

TensorId OpBuilder::layernorm(const std::string& name, TensorId x, bool save_stats) {
    const TensorId y = g_.add_tensor(name + ".output", shape(x), autocast_fp32_op(dtype(x)));
    Shape stat = shape(x);
    stat.back() = 1;
    const TensorId in = view(name + ".input", x, shape(x));
    std::vector<TensorId> saved{in};
    std::vector<TensorId> outs{y};
    if (save_stats) {
        // native_layer_norm's mean and rstd: the accumulate type (fp32) on CUDA.
        const DType st = p_.device == AutocastDevice::cuda ? DType::f32 : dtype(x);
        const TensorId mean = g_.add_tensor(name + ".mean", stat, st, false);
        const TensorId rstd = g_.add_tensor(name + ".rstd", stat, st, false);
        saved.insert(saved.end(), {mean, rstd});
        outs.insert(outs.end(), {mean, rstd});
    }
    Op op = make(name, OpClass::memory, {in}, outs, saved);
    op.fwd_flops = 8.0 * static_cast<double>(g_.tensor(x).numel());
    op.bwd_flops = 2 * op.fwd_flops;
    g_.add_op(std::move(op));
    return y;
}

TensorId OpBuilder::rms_normalized(const std::string& name, TensorId x,
                                   const std::string& normalized) {
    // hidden = x.to(float32) (x.float()); var = hidden.pow(2).mean(-1, keepdim=True);
    // hidden * torch.rsqrt(var + eps), all fp32: the part LlamaRMSNorm and GemmaRMSNorm share.
    const Shape s = shape(x);
    const TensorId h = dtype(x) == DType::f32 ? view(name + ".input_fp32", x, s)
                                              : copy(name + ".input_fp32", x, DType::f32);
    Shape stat = s;
    stat.back() = 1;
    const TensorId sq = g_.add_tensor(name + ".squared", s, DType::f32);
    g_.add_op(make(name + ".pow", OpClass::memory, {h}, {sq}, {h}));
    const TensorId var = g_.add_tensor(name + ".variance", stat, DType::f32);
    // torch 1.13's mean saves its input; current PyTorch computes its backward from sizes.
    g_.add_op(make(
        name + ".mean", OpClass::memory, {sq}, {var},
        p_.device == AutocastDevice::cpu ? std::vector<TensorId>{sq} : std::vector<TensorId>{}));
    const TensorId r = g_.add_tensor(name + ".rstd", stat, DType::f32);
    g_.add_op(make(name + ".rsqrt", OpClass::memory, {var}, {r}, {r}));
    const TensorId normed = g_.add_tensor(name + "." + normalized, s, DType::f32);
    g_.add_op(make(name + ".mul", OpClass::memory, {h, r}, {normed}, {h, r}));
    return normed;
}

TensorId OpBuilder::rmsnorm_hf(const std::string& name, TensorId x) {
    // LlamaRMSNorm: return weight * hidden.to(input_dtype)
    const DType in = dtype(x);
    const TensorId normed = rms_normalized(name, x, "normalized");
    const TensorId back = in == DType::f32 ? normed : copy(name + ".normalized", normed, in);
    // weight * hidden: the weight is a parameter (not an activation); mul saves `back` for the
    // weight's gradient, nothing when the weight is frozen.
    const TensorId y = g_.add_tensor(name + ".output", shape(x), promote(p_.param, in));
    g_.add_op(make(name + ".weight_mul", OpClass::memory, {back}, {y},
                   w_.frozen ? std::vector<TensorId>{} : std::vector<TensorId>{back}));
    return y;
}

TensorId OpBuilder::rmsnorm_offset(const std::string& name, TensorId x) {
    // GemmaRMSNorm: output = self._norm(x.float()); output = output * (1.0 + self.weight.float());
    // return output.type_as(x). The product keeps the fp32 normalized tensor and the (1 + weight)
    // vector.
    const Shape s = shape(x);
    const DType in = dtype(x);
    const TensorId normed = rms_normalized(name, x, "normalized_fp32");
    // 1.0 + weight.float(): made from the parameter in every call, one fp32 row of H.
    const TensorId scale = g_.add_tensor(name + ".weight_plus_one", {s.back()}, DType::f32);
    g_.add_op(make(name + ".weight_plus_one", OpClass::memory, {}, {scale}, {}));
    const TensorId scaled = g_.add_tensor(name + ".scaled_fp32", s, DType::f32);
    // Frozen, the scale needs no gradient: the product keeps only it.
    g_.add_op(
        make(name + ".weight_mul", OpClass::memory, {normed, scale}, {scaled},
             w_.frozen ? std::vector<TensorId>{scale} : std::vector<TensorId>{normed, scale}));
    return cast(name + ".output", scaled, in);
}

TensorId OpBuilder::norm(const std::string& name, TensorId x, NormKind kind) {
    switch (kind) {
        case NormKind::layernorm:
            return layernorm(name, x);
        case NormKind::rmsnorm:
            return rmsnorm_hf(name, x);
        case NormKind::rmsnorm_offset:
            return rmsnorm_offset(name, x);
    }
    return no_tensor;
}

TensorId OpBuilder::activation(const std::string& name, TensorId x, Activation a) {
    switch (a) {
        case Activation::gelu_new:
            return gelu_new(name, x);
        case Activation::gelu_fast:
            return gelu_fast(name, x);
        case Activation::silu:
            return unary_saving_input(name, x, 5);
        case Activation::gelu:
        case Activation::gelu_tanh:
            return unary_saving_input(name, x, 8);
    }
    return no_tensor;
}

TensorId OpBuilder::gelu_fast(const std::string& name, TensorId x) {
    // 0.5 * input * (1.0 + torch.tanh(input * 0.7978845608 * (1.0 + 0.044715 * input * input)))
    // in Python's order: half = 0.5 * x; a = x * c1; b = 0.044715 * x; c = b * x (saves b and
    // x); d = 1 + c; e = a * d (saves a and d); t = tanh(e) (saves t); u = 1 + t;
    // y = half * u (saves half and u). None of these ops is on an autocast list.
    const Shape s = shape(x);
    const DType in = dtype(x);
    auto fresh = [&](const std::string& n, std::vector<TensorId> from,
                     std::vector<TensorId> saved) {
        const TensorId y = g_.add_tensor(name + "." + n, s, in);
        g_.add_op(make(name + "." + n, OpClass::memory, std::move(from), {y}, std::move(saved)));
        return y;
    };
    const TensorId half = fresh("half_input", {x}, {});
    const TensorId a = fresh("input_scaled", {x}, {});
    const TensorId b = fresh("input_x_0.044715", {x}, {});
    const TensorId xin = view(name + ".input", x, s);
    const TensorId c = fresh("square_c", {b, xin}, {b, xin});
    const TensorId d = fresh("poly", {c}, {});
    const TensorId e = fresh("tanh_arg", {a, d}, {a, d});
    const TensorId t = g_.add_tensor(name + ".tanh", s, in);
    g_.add_op(make(name + ".tanh", OpClass::memory, {e}, {t}, {t}));
    const TensorId u = fresh("tanh_plus_one", {t}, {});
    const TensorId y = g_.add_tensor(name + ".output", s, in);
    g_.add_op(make(name + ".mul", OpClass::memory, {half, u}, {y}, {half, u}));
    return y;
}

TensorId OpBuilder::gelu_new(const std::string& name, TensorId x) {
    // 0.5 * x * (1.0 + tanh(sqrt(2/pi) * (x + 0.044715 * pow(x, 3.0)))), evaluated left to right
    // as Python does: half = 0.5 * x first, then the tanh term, then half * (1 + t).
    // A copy: every add_tensor below may grow the tensor list that shape(x) points into.
    const Shape s = shape(x);
    const DType in = dtype(x);
    const TensorId half = g_.add_tensor(name + ".half_input", s, in);
    g_.add_op(make(name + ".mul_half", OpClass::memory, {x}, {half}, {}));
    const DType pow_t = autocast_fp32_op(in);  // pow is on autocast's fp32 list (CUDA)
    const TensorId cube = g_.add_tensor(name + ".cube", s, pow_t);
    const TensorId xin = view(name + ".input", x, s);
    g_.add_op(make(name + ".pow", OpClass::memory, {xin}, {cube}, {xin}));
    const TensorId scaled = g_.add_tensor(name + ".pow_scaled", s, pow_t);
    g_.add_op(make(name + ".mul_c", OpClass::memory, {cube}, {scaled}, {}));
    const TensorId inner = g_.add_tensor(name + ".inner", s, promote(in, pow_t));
    g_.add_op(make(name + ".add", OpClass::memory, {x, scaled}, {inner}, {}));
    const TensorId arg = g_.add_tensor(name + ".tanh_arg", s, dtype(inner));
    g_.add_op(make(name + ".mul_k", OpClass::memory, {inner}, {arg}, {}));
    const TensorId t = g_.add_tensor(name + ".tanh", s, dtype(inner));
    g_.add_op(make(name + ".tanh", OpClass::memory, {arg}, {t}, {t}));
    const TensorId onep = g_.add_tensor(name + ".tanh_plus_one", s, dtype(t));
    g_.add_op(make(name + ".add_one", OpClass::memory, {t}, {onep}, {}));
    const TensorId y = g_.add_tensor(name + ".output", s, promote(in, dtype(onep)));
    g_.add_op(make(name + ".mul", OpClass::memory, {half, onep}, {y}, {half, onep}));
    return y;
}

TensorId OpBuilder::unary_saving_input(const std::string& name, TensorId x, double flops) {
    const TensorId y = g_.add_tensor(name + ".output", shape(x), dtype(x));
    const TensorId in = view(name + ".input", x, shape(x));
    Op op = make(name, OpClass::memory, {in}, {y}, {in});
    op.fwd_flops = flops * static_cast<double>(g_.tensor(x).numel());
    op.bwd_flops = 2 * op.fwd_flops;
    g_.add_op(std::move(op));
    return y;
}

TensorId OpBuilder::dropout(const std::string& name, TensorId x, double p) {
    if (p <= 0.0) return x;  // F.dropout with p == 0 returns its input: no mask
    const DType mask_dtype = p_.device == AutocastDevice::cuda ? DType::b8 : dtype(x);
    const TensorId y = g_.add_tensor(name + ".output", shape(x), dtype(x));
    const TensorId mask = g_.add_tensor(name + ".mask", shape(x), mask_dtype, false);
    g_.add_op(make(name, OpClass::memory, {x}, {y, mask}, {mask}));
    return y;
}

TensorId OpBuilder::add(const std::string& name, TensorId a, TensorId b) {
    const TensorId y = g_.add_tensor(name + ".output", shape(a), promote(dtype(a), dtype(b)));
    g_.add_op(make(name, OpClass::memory, {a, b}, {y}, {}));
    return y;
}

TensorId OpBuilder::mul(const std::string& name, TensorId a, TensorId b) {
    const TensorId y = g_.add_tensor(name + ".output", shape(a), promote(dtype(a), dtype(b)));
    g_.add_op(make(name, OpClass::memory, {a, b}, {y}, {a, b}));
    return y;
}

}  // namespace remat
