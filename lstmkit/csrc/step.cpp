// The per-step kernels of step.h: rows in parallel, each row's hidden units a vector at a time (cell.h).
#include "step.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <initializer_list>
#include <utility>

#include "cell.h"

namespace lstmkit {
namespace {

// Every tensor: a CPU matrix of `like`'s dtype with `cols` contiguous columns (rows may be strided).
void check_rows(std::initializer_list<std::pair<const at::Tensor*, const char*>> tensors, const at::Tensor& like,
                int64_t rows) {
  TORCH_CHECK(like.scalar_type() == at::kFloat || like.scalar_type() == at::kDouble,
              "the step kernels run float32 and float64, got ", like.scalar_type());
  for (const auto& [t, name] : tensors) {
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == like.scalar_type() && t->dim() == 2 &&
                    t->size(0) == rows && t->stride(1) == 1,
                name, " must be a CPU matrix of dtype ", like.scalar_type(), " with ", rows,
                " rows and contiguous columns, got ", t->sizes(), " ", t->scalar_type());
  }
}

const at::Tensor* peephole_of(const std::optional<at::Tensor>& peephole, int64_t H, const at::Tensor& like) {
  if (!peephole) return nullptr;
  TORCH_CHECK(peephole->is_contiguous() && peephole->numel() == 3 * H && peephole->scalar_type() == like.scalar_type(),
              "peephole must be a contiguous (3, ", H, ") tensor of dtype ", like.scalar_type());
  return &*peephole;
}

// Rows per parallel chunk: about 16 K elements of work each.
int64_t grain(int64_t H) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(H, 1)); }

}  // namespace

void step_forward(at::Tensor gates, const at::Tensor& c_prev, const std::optional<at::Tensor>& peephole, at::Tensor c,
                  at::Tensor h) {
  const int64_t rows = gates.size(0), H = c_prev.size(1);
  check_rows({{&gates, "gates"}, {&c_prev, "c_prev"}, {&c, "c"}, {&h, "h"}}, gates, rows);
  TORCH_CHECK(gates.size(1) == 4 * H && c.size(1) == H && h.size(1) == H, "gates (rows, 4H) with c_prev, c and h "
              "(rows, H) expected, got ", gates.sizes(), " ", c_prev.sizes(), " ", c.sizes(), " ", h.sizes());
  const at::Tensor* peep = peephole_of(peephole, H, gates);
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "lstmkit_step_forward", [&] {
    using T = scalar_t;
    using V = Vectorized<T>;
    constexpr int64_t L = V::size();
    const T* w = peep ? peep->data_ptr<T>() : nullptr;
    at::parallel_for(0, rows, grain(H), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        T* a = gates.data_ptr<T>() + r * gates.stride(0);
        const T* cp = c_prev.data_ptr<T>() + r * c_prev.stride(0);
        T* cr = c.data_ptr<T>() + r * c.stride(0);
        T* hr = h.data_ptr<T>() + r * h.stride(0);
        for (int64_t u = 0; u < H; u += L) {
          const int n = static_cast<int>(std::min(L, H - u));
          const auto s = cell_forward<T>(V::loadu(a + u, n), V::loadu(a + H + u, n), V::loadu(a + 2 * H + u, n),
                                         V::loadu(a + 3 * H + u, n), V::loadu(cp + u, n), Peep<T>(w, H, u, n));
          s.i.store(a + u, n), s.f.store(a + H + u, n), s.g.store(a + 2 * H + u, n), s.o.store(a + 3 * H + u, n);
          s.c.store(cr + u, n), s.h.store(hr + u, n);
        }
      }
    });
  });
}

void step_backward(const at::Tensor& dh, at::Tensor dc, const at::Tensor& acts, const at::Tensor& c,
                   const at::Tensor& c_prev, const std::optional<at::Tensor>& peephole, at::Tensor d_gates) {
  const int64_t rows = acts.size(0), H = c.size(1);
  check_rows({{&dh, "dh"}, {&dc, "dc"}, {&acts, "acts"}, {&c, "c"}, {&c_prev, "c_prev"}, {&d_gates, "d_gates"}},
             acts, rows);
  TORCH_CHECK(acts.size(1) == 4 * H && d_gates.size(1) == 4 * H && dh.size(1) == H && dc.size(1) == H &&
                  c_prev.size(1) == H,
              "acts and d_gates (rows, 4H) with dh, dc, c and c_prev (rows, H) expected");
  const at::Tensor* peep = peephole_of(peephole, H, acts);
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), "lstmkit_step_backward", [&] {
    using T = scalar_t;
    using V = Vectorized<T>;
    constexpr int64_t L = V::size();
    const T* w = peep ? peep->data_ptr<T>() : nullptr;
    at::parallel_for(0, rows, grain(H), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const T* a = acts.data_ptr<T>() + r * acts.stride(0);
        const T* cr = c.data_ptr<T>() + r * c.stride(0);
        const T* cp = c_prev.data_ptr<T>() + r * c_prev.stride(0);
        const T* d_h = dh.data_ptr<T>() + r * dh.stride(0);
        T* d_c = dc.data_ptr<T>() + r * dc.stride(0);
        T* dg = d_gates.data_ptr<T>() + r * d_gates.stride(0);
        for (int64_t u = 0; u < H; u += L) {
          const int n = static_cast<int>(std::min(L, H - u));
          const auto s = cell_backward<T>(V::loadu(a + u, n), V::loadu(a + H + u, n), V::loadu(a + 2 * H + u, n),
                                          V::loadu(a + 3 * H + u, n), V::loadu(cr + u, n), V::loadu(cp + u, n),
                                          V::loadu(d_h + u, n), V::loadu(d_c + u, n), Peep<T>(w, H, u, n));
          s.da_i.store(dg + u, n), s.da_f.store(dg + H + u, n), s.da_g.store(dg + 2 * H + u, n);
          s.da_o.store(dg + 3 * H + u, n), s.dc_prev.store(d_c + u, n);
        }
      }
    });
  });
}

}  // namespace lstmkit
