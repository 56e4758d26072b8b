// The recurrent kinds of the native loop (lstm.cpp), each a policy in its own header: dense (recurrent_dense.h,
// also the low-rank kind with the loop's projection), grouped (recurrent_grouped.h) and diagonal
// (recurrent_diagonal.h). A kind has a forward tile, a backward panel and a weight gradient; adding one adds a
// header and a line in with_kind, not branches in the loop.
#pragma once

#include "options.h"
#include "recurrent_dense.h"
#include "recurrent_diagonal.h"
#include "recurrent_grouped.h"

namespace lstmkit {

// A recurrent kind as a value: Kind<R>::type<T, E> is its policy for cell type T and operand type E.
template <template <typename, typename> class R>
struct Kind {
  template <typename T, typename E>
  using type = R<T, E>;
};

// f(Kind<...>{}) for the kind options names (float32 and float64 operands: every kind)
template <typename F>
void with_kind(const LoopOptions& options, const F& f) {
  if (options.diagonal) return f(Kind<DiagonalRecurrence>{});
  if (options.groups > 1) return f(Kind<GroupedRecurrence>{});
  f(Kind<DenseRecurrence>{});
}

}  // namespace lstmkit
