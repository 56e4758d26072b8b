// The products over all rows that follow the backward loop (the weight gradients, one GEMM each): float32 through
// oneDNN's matmul (measured 1.5-2.5x MKL's sgemm on this repo's AMD CPU, ARCHITECTURE.md) where torch has it, else
// MKL (at::mm). A fixed rule, never a timing: the same inputs and thread count give the same bits in every
// process (a resumed run equals an uninterrupted one), and torch.use_deterministic_algorithms holds. oneDNN is
// reached through ATen's at::native::mkldnn_matmul, whose header torch does not install: declared weak, so a
// torch without it still loads this and uses MKL.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

namespace at::native {
__attribute__((weak)) void mkldnn_matmul(const Tensor& mat1, const Tensor& mat2, const Tensor& result, float beta,
                                         float alpha);
}  // namespace at::native

namespace lstmkit {

inline void product_with(bool onednn, const at::Tensor& a, const at::Tensor& b, at::Tensor& c, bool accumulate) {
  if (onednn) {
    at::native::mkldnn_matmul(a, b, c, accumulate ? 1.f : 0.f, 1.f);
  } else if (accumulate) {
    c.addmm_(a, b);
  } else {
    at::mm_out(c, a, b);
  }
}

// c = a b, or c += a b when `accumulate`; a and b may be transposed views, c is contiguous.
inline void product(const at::Tensor& a, const at::Tensor& b, at::Tensor& c, bool accumulate = false) {
  const bool onednn = a.scalar_type() == at::kFloat && at::native::mkldnn_matmul && at::globalContext().hasMKLDNN();
  product_with(onednn, a, b, c, accumulate);
}

}  // namespace lstmkit
