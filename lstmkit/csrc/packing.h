// How the native loop (lstm.cpp) and its recurrent kinds (recurrent_*.h) lay weights out for the register tiles of
// gemm.h, packed once per call through the Operand policy of their element type, and the one product of the
// backward that they all share: rows of dL/dgates times a packed panel.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>

#include "gemm.h"

namespace lstmkit {

// The shapes a recurrent kind (recurrent.h) is packed for: H hidden units, P columns of h_{t-1}, `groups` blocks.
struct RecurrentShape {
  int64_t H, P, groups;
};

// Vectors per panel for an N-column product: the widest panel (fewest broadcasts per FMA) that still gives
// every thread a panel.
inline int panel_vecs(int64_t N, int64_t L, int threads) {
  for (int vecs : {4, 2})
    if ((N + vecs * L - 1) / (vecs * L) >= threads) return vecs;
  return 1;
}

// Vectors per panel of the backward's dL/dh_{t-1} (N columns): panel_vecs's, narrowed while panels do not tile
// `span` columns (one group's, or all N) exactly and a narrower one may.
inline int span_vecs(int64_t N, int64_t span, int64_t L, int threads) {
  int vecs = panel_vecs(N, L, threads);
  while (span % (vecs * L) && vecs > 1) vecs /= 2;
  return vecs;
}

// W (4H, K) packed as W^T (K, 4H) in panels of L hidden units, each holding their i, f, g, o columns
// (panel j, column g * L + v: row g * H + j * L + v of W), so one tile yields all four gates of L units.
template <typename E>
typename Operand<E>::Panels pack_gates(const typename Operand<E>::Weight& w, int64_t H) {
  constexpr int64_t L = Vectorized<typename Operand<E>::Acc>::size();
  return Operand<E>::pack_transposed(w, 4 * L, (H + L - 1) / L, [&](int64_t j, int64_t g) {
    return std::pair{g * H + j * L, std::min(L, H - j * L)};
  });
}

// W_hr^T (H, P) from W_hr (P, H), in panels of `vecs` vectors.
template <typename E>
typename Operand<E>::Panels pack_projection(const typename Operand<E>::Weight& w_hr, int vecs) {
  constexpr int64_t L = Vectorized<typename Operand<E>::Acc>::size();
  const int64_t P = w_hr.size(0), width = vecs * L;
  return Operand<E>::pack_transposed(w_hr, width, (P + width - 1) / width, [&](int64_t p, int64_t c) {
    const int64_t first = p * width + c * L;
    return std::pair{first, std::min(L, P - first)};
  });
}

// W (K, N) as it is, in panels of `vecs` vectors: the operand of dG W in the backward.
template <typename E>
typename Operand<E>::Panels pack_plain(const at::Tensor& w, int vecs) {
  return Operand<E>::pack_rows(w, vecs * Vectorized<typename Operand<E>::Acc>::size());
}

// dst (rows, n), rows `ld` apart, = the rows a[0..rows) (K values each) times panel p of w, its first n columns:
// one register tile through `tile` (kTileRows x w.width).
template <typename T, typename E>
void panel_product(const E* const* a, int64_t rows, int64_t K, const typename Operand<E>::Panels& w, int64_t p,
                   int64_t n, T* dst, int64_t ld, T* tile) {
  Operand<E>::kernel(rows, w.width / Vectorized<T>::size())(K, a, w.panel(p), tile, false);
  for (int64_t b = 0; b < rows; ++b) std::copy_n(tile + b * w.width, n, dst + b * ld);
}

}  // namespace lstmkit
