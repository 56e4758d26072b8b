// The named records that cross the Python border of the native loop (lstmkit/engine/ops.py builds them by
// keyword): the loop's options, and which gradients its backward computes. No positional bools.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace lstmkit {

struct LoopOptions {
  std::vector<int64_t> batch_sizes;  // rows of each step in packed order (schedule.py); [B] * T when padded
  bool reverse = false;              // walk time backwards
  bool training = false;             // forward: keep the activated gates and cells for the backward
  bool keep_h = false;               // forward: keep every h_t before the projection (the low-rank kind's output)
  bool diagonal = false;             // weight_hh is the four gates' diagonals (4, H): a_q += u_q ⊙ h_{t-1}
  int64_t groups = 1;                // > 1: weight_hh is a block-diagonal matrix's rows (4H, P / groups)
  bool bf16 = false;                 // operands in bf16 (x, the weights packed per call, h_t; given as float32 or
                                     // bfloat16), the cell and c_t in fp32, fp32 sums: out and h_n come as bfloat16
  bool int8 = false;                 // inference with int8 weights (per-row scales in Int8Scales) and activations
                                     // quantized per row each step (int8.h); x, h_t, c_t and the cell in fp32
};

struct Int8Scales {  // the per-output-row scales (rows,) of the int8 weights, float32: W ≈ diag(scale) q
  std::optional<at::Tensor> weight_ih, weight_hh, weight_hr;
};

struct Needs {  // the gradients backward computes; h0 and c0's always come (they are the loop's state)
  bool x = false, h0 = false, c0 = false, peephole = false, bias = false, weight_ih = false, weight_hh = false,
       weight_hr = false;
};

}  // namespace lstmkit
