"""One module per model family, each with its modules, a private assembler and registered
builders (:data:`seg_core.registry.MODELS`); the contract they follow is
:mod:`seg_core.contract`."""

from seg_core.models import deeplab, deeplab_v3, gcn, gscnn, icnet  # noqa: F401  (fill the registries)
from seg_core.models.pretraining import pretraining_network

__all__ = ["pretraining_network"]
