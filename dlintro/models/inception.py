"""GoogLeNet / Inception v1 (Szegedy et al., 2014): inception modules and auxiliary heads."""

from __future__ import annotations

import keras
from keras import layers

from dlintro.models.blocks import (
    Dropout,
    LocalResponseNormalization,
    check_input,
    check_min_size,
    classifier,
    conv_block,
    dense_block,
    probabilities,
)
from dlintro.models.registry import MODELS
from dlintro.registry import validated

# The paper's table 1, module by module: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
# A 3x3 stride-2 max-pool precedes each stage.
STAGES = {
    "3": {"3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64)},
    "4": {
        "4a": (192, 96, 208, 16, 48, 64),
        "4b": (160, 112, 224, 24, 64, 64),
        "4c": (128, 128, 256, 24, 64, 64),
        "4d": (112, 144, 288, 32, 64, 64),
        "4e": (256, 160, 320, 32, 128, 128),
    },
    "5": {"5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128)},
}
AUX_AFTER = ("4a", "4d")  # the modules whose outputs feed the auxiliary classifiers


def inception_module(
    x: keras.KerasTensor, filters: tuple[int, ...], name: str
) -> keras.KerasTensor:
    """Four parallel branches (1x1; 1x1 -> 3x3; 1x1 -> 5x5; 3x3 max-pool -> 1x1), concatenated."""
    f1, r3, f3, r5, f5, pool_proj = filters
    b1 = conv_block(x, f1, 1, "relu", name=f"inception{name}_1x1")
    b3 = conv_block(x, r3, 1, "relu", name=f"inception{name}_3x3_reduce")
    b3 = conv_block(b3, f3, 3, "relu", name=f"inception{name}_3x3")
    b5 = conv_block(x, r5, 1, "relu", name=f"inception{name}_5x5_reduce")
    b5 = conv_block(b5, f5, 5, "relu", name=f"inception{name}_5x5")
    bp = layers.MaxPooling2D(3, strides=1, padding="same", name=f"inception{name}_pool")(x)
    bp = conv_block(bp, pool_proj, 1, "relu", name=f"inception{name}_pool_proj")
    return layers.Concatenate(name=f"inception{name}_output")([b1, b3, b5, bp])


def auxiliary_head(
    x: keras.KerasTensor, num_classes: int, dropout: float, name: str
) -> keras.KerasTensor:
    """5x5 stride-3 average pool, 128@1x1, FC 1024 with dropout, softmax (float32)."""
    x = layers.AveragePooling2D(5, strides=3, name=f"{name}_pool")(x)
    x = conv_block(x, 128, 1, "relu", name=f"{name}_conv")
    x = layers.Flatten(name=f"{name}_flatten")(x)
    x = dense_block(x, 1024, "relu", dropout=dropout, name=f"{name}_fc")
    x = layers.Dense(num_classes, name=f"{name}_logits")(x)
    return probabilities(x, name=f"{name}_probabilities")


@MODELS.register(
    "googlenet", family="inception", description="GoogLeNet / Inception v1 (optional aux heads)"
)
@validated
def googlenet(
    input_shape: tuple[int, ...],
    num_classes: int,
    aux_heads: bool = False,
    dropout: Dropout = 0.4,
    aux_dropout: Dropout = 0.7,
    lrn: bool = False,
) -> keras.Model:
    """The network of the paper's table 1, as in BVLC's Caffe definition (bvlc_googlenet).

    Convolutions keep their biases, the fourth branch of each module is a true 5x5 (torchvision
    uses 3x3 there) and there is no batch norm. Stem: 64@7x7 stride 2, 3x3 stride-2 max-pool,
    64@1x1, 192@3x3, max-pool; then modules 3a-3b, max-pool, 4a-4e, max-pool, 5a-5b, global
    average pooling (the paper's 7x7 average pool on 224x224), dropout 0.4, classifier.
    Convolutions and pools are SAME, so without aux heads any input size works.
    On 224x224x3 for 1000 classes: 6,998,552 parameters without aux heads, 13,378,280 with.

    `aux_heads` adds the two training-time classifiers on 4a and 4d; the model then has three
    outputs, [main, aux after 4a, aux after 4d], and needs at least 65x65 input. Training adds
    the aux losses weighted by 0.3, as the paper does (dlintro.loop); evaluation, model.keras,
    predict and export use the main output (models.main_output). `lrn` adds the local response
    normalizations after the first max-pool and after the 192@3x3 convolution (k=1, n=5,
    alpha=1e-4/5, beta=0.75, as in Caffe).
    """
    check_input(input_shape, num_classes, "googlenet")
    if aux_heads:
        windows = [(7, 2, "same")] + [(3, 2, "same")] * 3 + [(5, 3, "valid")]
        check_min_size(
            input_shape, windows, "googlenet with aux_heads", "a 5x5 pool on a 1/16-size map"
        )

    def norm(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
        return LocalResponseNormalization(2, 1.0, 2e-5, 0.75, name=name)(x) if lrn else x

    inputs = keras.Input(shape=input_shape, name="images")
    x = conv_block(inputs, 64, 7, "relu", strides=2, name="conv1")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    x = norm(x, "pool1_lrn")
    x = conv_block(x, 64, 1, "relu", name="conv2_reduce")
    x = conv_block(x, 192, 3, "relu", name="conv2")
    x = norm(x, "conv2_lrn")
    aux = []
    for stage, modules in STAGES.items():
        x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool{int(stage) - 1}")(x)
        for name, filters in modules.items():
            x = inception_module(x, filters, name)
            if aux_heads and name in AUX_AFTER:
                aux.append(auxiliary_head(x, num_classes, aux_dropout, f"aux{len(aux) + 1}"))
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    if dropout > 0:
        x = layers.Dropout(dropout, name="dropout")(x)
    outputs = classifier(x, num_classes)
    return keras.Model(inputs, [outputs, *aux] if aux_heads else outputs, name="googlenet")
