"""GBLM-Pruner: unstructured pruning by |W| x (activation norm + gradient); the shape is unchanged and the
weights stay 16-bit on disk (a profile adds LLM.int8() at load with `load_quant`)."""

from __future__ import annotations

from pydantic import Field

from leanserve.methods import calibrated


class Params(calibrated(32, 512)):  # type: ignore[misc]
    sparsity: float = Field(0.5, gt=0, lt=1, description="share of each row's weights set to zero")
    gradient_term: bool = Field(True, description="add the gradient term (false: Wanda, |W| x ||X|| alone)")
