"""Models: the registry (dlintro.models.registry) and the families, which register on import.

Adding a model is one decorated builder in a family module (or a one-line `register_variant`)
plus a config; see dlintro.models.registry for the builder contract.
"""

from __future__ import annotations

from dlintro.models import (  # noqa: F401  (each family registers its builders)
    alexnet,
    allcnn,
    convnets,
    inception,
    lenet,
    mlp,
    nin,
    resnet,
    vgg,
)
from dlintro.models.registry import MODELS, SUPPLIED, build, main_output

__all__ = ["MODELS", "SUPPLIED", "build", "main_output"]
