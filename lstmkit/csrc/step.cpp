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

// fn(r, u, n) for every row r and every vector of hidden units [u, u + n), rows in parallel, about 16 K
// elements of work per chunk.
template <typename T, typename Fn>
void for_each_vector(int64_t rows, int64_t H, const Fn& fn) {
  constexpr int64_t L = Vectorized<T>::size();
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(H, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t u = 0; u < H; u += L) fn(r, u, static_cast<int>(std::min(L, H - u)));
  });
}

// The rows of a matrix whose rows may be strided: rows[r] points at row r.
template <typename T>
struct Rows {
  T* data;
  int64_t stride;
  explicit Rows(const at::Tensor& t) : data(t.data_ptr<T>()), stride(t.stride(0)) {}
  T* operator[](int64_t r) const { return data + r * stride; }
};

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
    const T* w = peep ? peep->data_ptr<T>() : nullptr;
    const Rows<T> G(gates), C_prev(c_prev), C(c), Hs(h);
    for_each_vector<T>(rows, H, [&](int64_t r, int64_t u, int n) {
      T* a = G[r] + u;
      const auto s = cell_forward<T>(V::loadu(a, n), V::loadu(a + H, n), V::loadu(a + 2 * H, n),
                                     V::loadu(a + 3 * H, n), V::loadu(C_prev[r] + u, n), Peep<T>(w, H, u, n));
      s.i.store(a, n), s.f.store(a + H, n), s.g.store(a + 2 * H, n), s.o.store(a + 3 * H, n);
      s.c.store(C[r] + u, n), s.h.store(Hs[r] + u, n);
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
    const T* w = peep ? peep->data_ptr<T>() : nullptr;
    const Rows<T> A(acts), C(c), C_prev(c_prev), DH(dh), DC(dc), DG(d_gates);
    for_each_vector<T>(rows, H, [&](int64_t r, int64_t u, int n) {
      const T* a = A[r] + u;
      T* d_c = DC[r] + u;
      T* dg = DG[r] + u;
      const auto s = cell_backward<T>(V::loadu(a, n), V::loadu(a + H, n), V::loadu(a + 2 * H, n),
                                      V::loadu(a + 3 * H, n), V::loadu(C[r] + u, n), V::loadu(C_prev[r] + u, n),
                                      V::loadu(DH[r] + u, n),
                                      V::loadu(d_c, n), Peep<T>(w, H, u, n));
      s.da_i.store(dg, n), s.da_f.store(dg + H, n), s.da_g.store(dg + 2 * H, n), s.da_o.store(dg + 3 * H, n);
      s.dc_prev.store(d_c, n);
    });
  });
}

}  // namespace lstmkit

// The step kernels as PyTorch operators, torch.ops.lstmkit.step_forward / step_backward, with typed schemas that
// say what each writes (the fused engine's loop in lstmkit/engine/step.py calls them; torch.compile and export run
// that loop as plain ops instead, lstmkit/engine/bptt.py).
TORCH_LIBRARY_FRAGMENT(lstmkit, m) {
  m.def("step_forward(Tensor(a!) gates, Tensor c_prev, Tensor? peephole, Tensor(b!) c, Tensor(c!) h) -> ()");
  m.def("step_backward(Tensor dh, Tensor(a!) dc, Tensor acts, Tensor c, Tensor c_prev, Tensor? peephole, "
        "Tensor(b!) d_gates) -> ()");
}

namespace {

void step_forward_op(const at::Tensor& gates, const at::Tensor& c_prev, const std::optional<at::Tensor>& peephole,
                     const at::Tensor& c, const at::Tensor& h) {
  lstmkit::step_forward(gates, c_prev, peephole, c, h);
}

void step_backward_op(const at::Tensor& dh, const at::Tensor& dc, const at::Tensor& acts, const at::Tensor& c,
                      const at::Tensor& c_prev, const std::optional<at::Tensor>& peephole, const at::Tensor& d_gates) {
  lstmkit::step_backward(dh, dc, acts, c, c_prev, peephole, d_gates);
}

}  // namespace

TORCH_LIBRARY_IMPL(lstmkit, CPU, m) {
  m.impl("step_forward", &step_forward_op);
  m.impl("step_backward", &step_backward_op);
}
