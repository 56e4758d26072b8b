// One time step's elementwise part as its own kernel, for the engines whose time loop is in Python
// (lstmkit/engine/step.py): the fused engine with structured weights, and its inference loop.
#pragma once

#include <torch/extension.h>

#include <optional>

namespace lstmkit {

// gates (rows, 4H): the pre-activations, overwritten with the activated gates i, f, g, o; c_prev (rows, H).
// Writes c_t into c (rows, H), which may be c_prev itself, and h_t into h (rows, H).
void step_forward(at::Tensor gates, const at::Tensor& c_prev, const std::optional<at::Tensor>& peephole, at::Tensor c,
                  at::Tensor h);

// dh = dL/dh_t (rows, H); dc = dL/dc_t (rows, H), overwritten with dL/dc_{t-1}; acts (rows, 4H) the activated
// gates and c, c_prev (rows, H) as step_forward saw them. Writes dL/da into d_gates (rows, 4H).
void step_backward(const at::Tensor& dh, at::Tensor dc, const at::Tensor& acts, const at::Tensor& c,
                   const at::Tensor& c_prev, const std::optional<at::Tensor>& peephole, at::Tensor d_gates);

}  // namespace lstmkit
