// Vectorized sigmoid and tanh for the fused pointwise kernels: fast and accurate to a few ulp in float,
// Sleef (1 ulp) in double, where gradcheck compares against finite differences.
#pragma once

#include <ATen/cpu/vec/vec.h>

namespace lstmkit {

using at::vec::Vectorized;

template <typename T>
struct Act;

template <>
struct Act<float> {
  using V = Vectorized<float>;

  // 1 / d for finite d > 0 to about 1 ulp: the hardware estimate and one Newton step r (2 - d r), a few
  // cycles instead of a division (the pointwise step has five)
  static V reciprocal(V d) {
#if defined(CPU_CAPABILITY_AVX512)
    const __m512 r = _mm512_rcp14_ps(d);
    return _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.f)));
#elif defined(CPU_CAPABILITY_AVX2)
    const __m256 r = _mm256_rcp_ps(d);
    return _mm256_mul_ps(r, _mm256_fnmadd_ps(d, r, _mm256_set1_ps(2.f)));
#else
    return d.reciprocal();
#endif
  }

  // 1 / (1 + e^-x): relative accuracy everywhere, exactly 0 and 1 at the extremes as float32's own sigmoid. x is
  // kept >= -87 so e^-x stays finite (the Newton step of `reciprocal` would turn 1/inf into 0 * (2 - inf * 0) =
  // NaN), and below that, where float32's sigmoid is under 1.7e-38 (and 0 from -104 on), the result is 0.
  static V sigmoid(V x) {
    const V low(-87.f);
#if defined(CPU_CAPABILITY_AVX512)  // the same with masks kept in mask registers: 10 instructions fewer
    const V r = reciprocal(V(1.f) + V(_mm512_max_ps(low, x)).neg().exp_u20());  // maxps(low, NaN) is NaN
    return _mm512_maskz_mov_ps(static_cast<__mmask16>(~_mm512_cmp_ps_mask(x, low, _CMP_LT_OQ)), r);
#else
    return V::blendv(reciprocal(V(1.f) + at::vec::maximum(x, low).neg().exp_u20()), V(0.f), x < low);
#endif
  }

  // An odd/even rational minimax fit on [-7.9988, 7.9988] (the one Eigen uses); at most 7 ulp from tanh, and at
  // its clamp exactly ±1 as float32's tanh is there (tests/test_saturation.py).
  static V tanh(V x) {
    const V clamp(7.99881172180175781f);
#if defined(CPU_CAPABILITY_AVX512)  // minps/maxps return their second operand where one is NaN: x's NaN stays
    const V y = _mm512_min_ps(clamp, _mm512_max_ps(clamp.neg(), x));
#else
    const V y = at::vec::minimum(at::vec::maximum(x, clamp.neg()), clamp);
#endif
    const V y2 = y * y;
    V p(-2.76076847742355e-16f);
    p = at::vec::fmadd(y2, p, V(2.00018790482477e-13f));
    p = at::vec::fmadd(y2, p, V(-8.60467152213735e-11f));
    p = at::vec::fmadd(y2, p, V(5.12229709037114e-08f));
    p = at::vec::fmadd(y2, p, V(1.48572235717979e-05f));
    p = at::vec::fmadd(y2, p, V(6.37261928875436e-04f));
    p = at::vec::fmadd(y2, p, V(4.89352455891786e-03f));
    V q(1.19825839466702e-06f);
    q = at::vec::fmadd(y2, q, V(1.18534705686654e-04f));
    q = at::vec::fmadd(y2, q, V(2.26843463243900e-03f));
    q = at::vec::fmadd(y2, q, V(4.89352518554385e-03f));
    const V t = y * p * reciprocal(q);  // tanh(x) = x to float precision near 0:
#if defined(CPU_CAPABILITY_AVX512)
    return _mm512_mask_mov_ps(t, _mm512_cmp_ps_mask(x.abs(), V(0.0004f), _CMP_LT_OQ), x);
#else
    return V::blendv(t, x, x.abs() < V(0.0004f));
#endif
  }
};

template <>
struct Act<double> {
  using V = Vectorized<double>;
  static V sigmoid(V x) { return (V(1.) + x.neg().exp()).reciprocal(); }
  static V tanh(V x) { return x.tanh(); }
};

}  // namespace lstmkit
