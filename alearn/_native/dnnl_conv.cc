// oneDNN's 2-D convolution and its two transposes as XLA FFI custom calls (CPU).
//
// Three handlers, one per product ConvOp computes (alearn/_layers/ops.py):
//   alearn_dnnl_conv_fwd          y  = conv(x, w)           x NHWC, w HWIO, y NHWC
//   alearn_dnnl_conv_input_grad   dx = conv_transpose(g, w)  g NHWC, w HWIO, dx NHWC
//   alearn_dnnl_conv_weight_grad  dw = xᵀ ⋆ g               x NHWC, g NHWC, dw HWIO
// Attributes: strides (2) and pads (4: top, bottom, left, right), all int64. Every shape is
// read from the buffers (the output's gives what the inputs do not: H, W of dx; kh, kw of dw).
//
// Activations stay NHWC (oneDNN's channels-last kernels, no reorder). The kernel is given
// to oneDNN in the layout it chooses (format_tag::any) and reordered from / to HWIO in the
// call. Each distinct (product, shape) builds its primitive once (a process-wide cache,
// under a mutex); the scratchpad is the caller's (scratchpad_mode::user, a thread-local
// buffer), so concurrent calls from XLA's threads never share one. f32 only, exact
// arithmetic mode (oneDNN's default fpmath mode: no bf16 down-conversion).
//
// Built by alearn/_native/__init__.py with g++ against the oneDNN wheel
// (onednn-devel-cpu-gomp) and jaxlib's FFI headers.

#include <array>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

namespace {

enum Product : int64_t { kApply = 0, kInputGrad = 1, kWeightGrad = 2 };

// product, n, h, w, c, kh, kw, o, ho, wo, sh, sw, pad top, bottom, left, right
using Key = std::array<int64_t, 16>;

struct Plan {
  dnnl::primitive conv;
  memory::desc act_in, act_other, wei_user, wei_prim, scratch;
  bool reorder = false;
  dnnl::primitive wei_reorder;  // HWIO -> oneDNN's layout (apply, input_grad) or back
};

dnnl::engine& Engine() {
  static dnnl::engine* e = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *e;
}

std::unique_ptr<Plan> Build(const Key& k) {
  const int64_t prod = k[0], n = k[1], h = k[2], w = k[3], c = k[4], kh = k[5], kw = k[6],
                o = k[7], ho = k[8], wo = k[9];
  const memory::dims strides{k[10], k[11]}, pad_l{k[12], k[14]}, pad_r{k[13], k[15]};
  const memory::desc src({n, c, h, w}, dt::f32, tag::nhwc);
  const memory::desc dst({n, o, ho, wo}, dt::f32, tag::nhwc);
  const memory::desc wei_user({o, c, kh, kw}, dt::f32, tag::hwio);
  const memory::desc wei_any({o, c, kh, kw}, dt::f32, tag::any);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto fwd = dnnl::convolution_forward::primitive_desc(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src,
      wei_any, dst, strides, pad_l, pad_r, attr);
  auto plan = std::make_unique<Plan>();
  plan->wei_user = wei_user;
  if (prod == kApply) {
    plan->conv = dnnl::convolution_forward(fwd);
    plan->wei_prim = fwd.weights_desc();
    plan->scratch = fwd.scratchpad_desc();
  } else if (prod == kInputGrad) {
    auto bwd = dnnl::convolution_backward_data::primitive_desc(
        Engine(), dnnl::algorithm::convolution_direct, src, wei_any, dst, strides, pad_l,
        pad_r, fwd, attr);
    plan->conv = dnnl::convolution_backward_data(bwd);
    plan->wei_prim = bwd.weights_desc();
    plan->scratch = bwd.scratchpad_desc();
  } else {
    auto bwd = dnnl::convolution_backward_weights::primitive_desc(
        Engine(), dnnl::algorithm::convolution_direct, src, wei_any, dst, strides, pad_l,
        pad_r, fwd, attr);
    plan->conv = dnnl::convolution_backward_weights(bwd);
    plan->wei_prim = bwd.diff_weights_desc();
    plan->scratch = bwd.scratchpad_desc();
  }
  plan->reorder = plan->wei_prim != wei_user;
  if (plan->reorder) {
    plan->wei_reorder =
        prod == kWeightGrad
            ? dnnl::reorder(dnnl::reorder::primitive_desc(Engine(), plan->wei_prim, Engine(),
                                                          wei_user))
            : dnnl::reorder(dnnl::reorder::primitive_desc(Engine(), wei_user, Engine(),
                                                          plan->wei_prim));
  }
  return plan;
}

const Plan& GetPlan(const Key& k) {
  static std::mutex mu;
  static auto* plans = new std::map<Key, std::unique_ptr<Plan>>();
  std::lock_guard<std::mutex> lock(mu);
  auto it = plans->find(k);
  if (it == plans->end()) it = plans->emplace(k, Build(k)).first;
  return *it->second;
}

void* Grow(std::vector<char>& buf, size_t bytes) {
  if (buf.size() < bytes) buf.resize(bytes);
  return buf.data();
}

// a, b: the two operands in the handler's order; out: the result.
ffi::Error Run(Product prod, ffi::Span<const int64_t> nhwc, ffi::Span<const int64_t> hwio,
               ffi::Span<const int64_t> out_nhwc, ffi::Span<const int64_t> strides,
               ffi::Span<const int64_t> pads, void* a, void* b, void* out) {
  if (strides.size() != 2 || pads.size() != 4) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "strides: 2 values, pads: 4");
  }
  for (int64_t p : pads) {
    if (p < 0) return ffi::Error(ffi::ErrorCode::kInvalidArgument, "negative padding");
  }
  // nhwc: the input image's shape; out_nhwc: the output image's; hwio: the kernel's.
  Key k{prod,       nhwc[0],     nhwc[1],     nhwc[2],    nhwc[3],   hwio[0],
        hwio[1],    hwio[3],     out_nhwc[1], out_nhwc[2], strides[0], strides[1],
        pads[0],    pads[1],     pads[2],     pads[3]};
  try {
    const Plan& plan = GetPlan(k);
    dnnl::engine& eng = Engine();
    dnnl::stream stream(eng);
    thread_local std::vector<char> wbuf, sbuf;
    memory scratch(plan.scratch, eng, Grow(sbuf, plan.scratch.get_size()));
    if (prod == kWeightGrad) {
      memory src(memory::desc({k[1], k[4], k[2], k[3]}, dt::f32, tag::nhwc), eng, a);
      memory dst(memory::desc({k[1], k[7], k[8], k[9]}, dt::f32, tag::nhwc), eng, b);
      memory user(plan.wei_user, eng, out);
      memory dw = plan.reorder ? memory(plan.wei_prim, eng, Grow(wbuf, plan.wei_prim.get_size()))
                               : user;
      plan.conv.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, dst},
                                 {DNNL_ARG_DIFF_WEIGHTS, dw}, {DNNL_ARG_SCRATCHPAD, scratch}});
      if (plan.reorder) plan.wei_reorder.execute(stream, {{DNNL_ARG_FROM, dw}, {DNNL_ARG_TO, user}});
    } else {
      memory user(plan.wei_user, eng, b);
      memory wei = plan.reorder ? memory(plan.wei_prim, eng, Grow(wbuf, plan.wei_prim.get_size()))
                                : user;
      if (plan.reorder) plan.wei_reorder.execute(stream, {{DNNL_ARG_FROM, user}, {DNNL_ARG_TO, wei}});
      memory img(memory::desc({k[1], k[4], k[2], k[3]}, dt::f32, tag::nhwc), eng,
                 prod == kApply ? a : out);
      memory grad(memory::desc({k[1], k[7], k[8], k[9]}, dt::f32, tag::nhwc), eng,
                  prod == kApply ? out : a);
      if (prod == kApply) {
        plan.conv.execute(stream, {{DNNL_ARG_SRC, img}, {DNNL_ARG_WEIGHTS, wei},
                                   {DNNL_ARG_DST, grad}, {DNNL_ARG_SCRATCHPAD, scratch}});
      } else {
        plan.conv.execute(stream, {{DNNL_ARG_DIFF_DST, grad}, {DNNL_ARG_WEIGHTS, wei},
                                   {DNNL_ARG_DIFF_SRC, img}, {DNNL_ARG_SCRATCHPAD, scratch}});
      }
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN: ") + e.what());
  } catch (const std::exception& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, e.what());
  }
  return ffi::Error::Success();
}

using F32 = ffi::Buffer<ffi::F32>;
using Ints = ffi::Span<const int64_t>;

ffi::Error Apply(F32 x, F32 w, ffi::ResultBuffer<ffi::F32> y, Ints strides, Ints pads) {
  return Run(kApply, x.dimensions(), w.dimensions(), y->dimensions(), strides, pads,
             x.untyped_data(), w.untyped_data(), y->untyped_data());
}

ffi::Error InputGrad(F32 g, F32 w, ffi::ResultBuffer<ffi::F32> dx, Ints strides, Ints pads) {
  return Run(kInputGrad, dx->dimensions(), w.dimensions(), g.dimensions(), strides, pads,
             g.untyped_data(), w.untyped_data(), dx->untyped_data());
}

ffi::Error WeightGrad(F32 x, F32 g, ffi::ResultBuffer<ffi::F32> dw, Ints strides, Ints pads) {
  return Run(kWeightGrad, x.dimensions(), dw->dimensions(), g.dimensions(), strides, pads,
             x.untyped_data(), g.untyped_data(), dw->untyped_data());
}

}  // namespace

#define ALEARN_CONV_HANDLER(symbol, fn)                                             \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(symbol, fn,                                         \
                                ffi::Ffi::Bind()                                    \
                                    .Arg<F32>()                                     \
                                    .Arg<F32>()                                     \
                                    .Ret<F32>()                                     \
                                    .Attr<Ints>("strides")                          \
                                    .Attr<Ints>("pads"));

ALEARN_CONV_HANDLER(alearn_dnnl_conv_fwd, Apply)
ALEARN_CONV_HANDLER(alearn_dnnl_conv_input_grad, InputGrad)
ALEARN_CONV_HANDLER(alearn_dnnl_conv_weight_grad, WeightGrad)

extern "C" int alearn_dnnl_version() {
  const dnnl_version_t* v = dnnl_version();
  return v->major * 10000 + v->minor * 100 + v->patch;
}
