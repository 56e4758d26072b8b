"""Compression: turn a trained dense LSTM into a smaller one (convert: structured weights by from_dense)."""
from lstmkit.compress.convert import ConversionReport, MatrixError, convert, densify
from lstmkit.compress.distill import DistillationTask, distillation_loss
from lstmkit.compress.prune import GradualPruner, agp_sparsity, prune, sparsity
from lstmkit.compress.quantize import quantize

__all__ = ["convert", "densify", "ConversionReport", "MatrixError"]
__all__ += ["prune", "sparsity", "agp_sparsity", "GradualPruner", "quantize", "distillation_loss", "DistillationTask"]
