// The LSTM cell's elementwise step on one vector of hidden units, forward and backward: the equations of
// lstmkit/cell.py (lstm_pointwise, lstm_pointwise_backward) for the native loop (lstm.cpp) and the per-step
// kernels the Python engines call (step.cpp). Gate order i, f, g, o; peephole rows w_ci, w_cf, w_co.
#pragma once

#include "activations.h"

namespace lstmkit {

// The peephole weights of one vector of units, or none: w_ci, w_cf, w_co.
template <typename T>
struct Peep {
  using V = Vectorized<T>;
  V ci, cf, co;
  bool on = false;

  Peep() = default;
  // peep (3, H) or null; units [u, u + n)
  Peep(const T* peep, int64_t H, int64_t u, int n) : on(peep != nullptr) {
    if (on) ci = V::loadu(peep + u, n), cf = V::loadu(peep + H + u, n), co = V::loadu(peep + 2 * H + u, n);
  }
};

template <typename T>
struct CellForward {
  Vectorized<T> i, f, g, o, c, h;
};

// From the pre-activations a = W_ih x_t + W_hh h_{t-1} + b and c_{t-1}: the activated gates, c_t and h_t.
template <typename T>
inline CellForward<T> cell_forward(Vectorized<T> a_i, Vectorized<T> a_f, Vectorized<T> a_g, Vectorized<T> a_o,
                                   Vectorized<T> c_prev, const Peep<T>& peep) {
  using A = Act<T>;
  if (peep.on) {
    a_i = at::vec::fmadd(peep.ci, c_prev, a_i);  // a_i += w_ci ⊙ c_{t-1}
    a_f = at::vec::fmadd(peep.cf, c_prev, a_f);  // a_f += w_cf ⊙ c_{t-1}
  }
  const auto i = A::sigmoid(a_i), f = A::sigmoid(a_f), g = A::tanh(a_g);
  const auto c = at::vec::fmadd(f, c_prev, i * g);  // c_t = f ⊙ c_{t-1} + i ⊙ g
  if (peep.on) a_o = at::vec::fmadd(peep.co, c, a_o);  // the output gate looks at c_t
  const auto o = A::sigmoid(a_o);
  return {i, f, g, o, c, o * A::tanh(c)};  // h_t = o ⊙ tanh(c_t)
}

template <typename T>
struct CellBackward {
  Vectorized<T> da_i, da_f, da_g, da_o, dc_prev, tanh_c;
};

// From dL/dh_t, dL/dc_t (from step t+1), the saved activated gates and c_t, c_{t-1}: dL/da and dL/dc_{t-1}.
template <typename T>
inline CellBackward<T> cell_backward(Vectorized<T> i, Vectorized<T> f, Vectorized<T> g, Vectorized<T> o,
                                     Vectorized<T> c, Vectorized<T> c_prev, Vectorized<T> d_h, Vectorized<T> d_c,
                                     const Peep<T>& peep) {
  using V = Vectorized<T>;
  const V one(T(1)), tanh_c = Act<T>::tanh(c);
  const V da_o = d_h * tanh_c * o * (one - o);   // h = o ⊙ tanh(c), σ' = σ(1 - σ)
  d_c = d_c + d_h * o * (one - tanh_c * tanh_c);  // tanh' = 1 - tanh²
  if (peep.on) d_c = d_c + da_o * peep.co;        // a_o += w_co ⊙ c_t
  const V da_i = d_c * g * i * (one - i);         // c = f ⊙ c_prev + i ⊙ g
  const V da_f = d_c * c_prev * f * (one - f);
  const V da_g = d_c * i * (one - g * g);
  V dc_prev = d_c * f;
  if (peep.on) dc_prev = dc_prev + da_i * peep.ci + da_f * peep.cf;  // a_i, a_f += w_c{i,f} ⊙ c_prev
  return {da_i, da_f, da_g, da_o, dc_prev, tanh_c};
}

}  // namespace lstmkit
