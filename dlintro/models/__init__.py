"""Models: the registry (dlintro.models.registry) and the families, which register on import.

Adding a model is one decorated builder in a family module (or a one-line `register_variant`)
plus a config; see dlintro.models.registry for the builder contract.
"""

from __future__ import annotations

from dlintro.models import (  # noqa: F401  (each family registers its builders)
    alexnet,
    allcnn,
    convnets,
    cuda_convnet,
    inception,
    lenet,
    mlp,
    nin,
    resnet,
    speednet,
    vgg,
)
from dlintro.models.datainit import initialize_from_data
from dlintro.models.registry import MODELS, SUPPLIED, build, main_output

__all__ = ["MODELS", "SUPPLIED", "build", "initialize_from_data", "main_output"]
