"""Tests for dlintro.registry and the real registries (models, optimizers, schedules, data)."""

from __future__ import annotations

from typing import Annotated, Literal

import pydantic
import pytest
from pydantic import Field

from dlintro.errors import UserError
from dlintro.registry import ParamsError, Registry, UnknownNameError, did_you_mean, validated


@validated
def _widget(
    size: int,
    width: Annotated[int, Field(ge=1, le=10)] = 3,
    rate: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5,
    mode: Literal["fast", "slow"] = "fast",
    flag: bool = False,
) -> dict[str, object]:
    return {"size": size, "width": width, "rate": rate, "mode": mode, "flag": flag}


def _gadget() -> str:
    return "gadget"


@pytest.fixture
def registry() -> Registry:
    reg: Registry = Registry("widget")
    reg.register("widget", description="a test widget")(_widget)
    reg.register()(_gadget)  # registered under its own name
    return reg


# ----------------------------------------------------------------------------- register / get


def test_register_and_get(registry: Registry) -> None:
    assert registry.get("widget") is _widget
    assert registry.get("_gadget") is _gadget
    assert registry.names() == ["_gadget", "widget"]
    assert list(registry) == ["_gadget", "widget"]
    assert len(registry) == 2
    assert "widget" in registry
    assert "nope" not in registry
    assert registry.meta("widget") == {"description": "a test widget"}
    assert registry.meta("_gadget") == {}
    assert registry.get("widget")(size=2) == {
        "size": 2,
        "width": 3,
        "rate": 0.5,
        "mode": "fast",
        "flag": False,
    }


def test_register_returns_the_function_unchanged() -> None:
    reg: Registry = Registry("thing")

    @reg.register("thing")
    def thing() -> int:
        return 7

    assert thing() == 7
    assert reg.get("thing") is thing


def test_duplicate_name_raises(registry: Registry) -> None:
    with pytest.raises(ValueError, match=r"^widget 'widget' is registered twice$"):
        registry.register("widget")(_gadget)
    # the original entry is untouched
    assert registry.get("widget") is _widget


def test_unknown_name_lists_valid_names_and_did_you_mean(registry: Registry) -> None:
    with pytest.raises(UnknownNameError) as info:
        registry.get("widgte")
    assert isinstance(info.value, UserError)
    assert info.value.exit_code == 2
    assert str(info.value) == (
        "unknown widget 'widgte' (did you mean 'widget'?); valid: _gadget, widget"
    )


def test_unknown_name_without_close_match(registry: Registry) -> None:
    with pytest.raises(UserError) as info:
        registry.get("zzzzzzzz")
    assert str(info.value) == "unknown widget 'zzzzzzzz'; valid: _gadget, widget"


def test_meta_of_unknown_name_raises(registry: Registry) -> None:
    with pytest.raises(UnknownNameError, match="unknown widget 'nope'"):
        registry.meta("nope")


def test_did_you_mean() -> None:
    assert did_you_mean("adamm", ["adam", "sgd"]) == " (did you mean 'adam'?)"
    assert did_you_mean("xyz", ["adam", "sgd"]) == ""
    assert did_you_mean("x", []) == ""


def test_params_lists_configurable_parameters(registry: Registry) -> None:
    assert list(registry.params("widget")) == ["size", "width", "rate", "mode", "flag"]
    assert list(registry.params("widget", skip=("size",))) == ["width", "rate", "mode", "flag"]


# ----------------------------------------------------------------------------- check_params


def test_check_params_missing_required_param(registry: Registry) -> None:
    with pytest.raises(ParamsError) as info:
        registry.check_params("widget", {"width": 2})
    assert str(info.value) == "missing required parameter of widget 'widget'"
    assert info.value.errors == [(("size",), str(info.value), None)]
    registry.check_params("widget", {"width": 2}, skip=("size",))  # supplied by the caller


def test_check_params_valid_params_pass(registry: Registry) -> None:
    registry.check_params("widget", {}, skip=("size",))
    registry.check_params("widget", {"size": 1, "width": 10, "rate": 0.25, "mode": "slow"})
    registry.check_params("widget", {"flag": True, "width": 1}, skip=("size",))


def test_check_params_unknown_param_did_you_mean(registry: Registry) -> None:
    with pytest.raises(ParamsError) as info:
        registry.check_params("widget", {"size": 1, "widht": 4})
    assert str(info.value) == "unknown parameter of widget 'widget' (did you mean 'width'?)"
    assert info.value.errors == [(("widht",), str(info.value), 4)]


def test_check_params_unknown_param_lists_valid(registry: Registry) -> None:
    with pytest.raises(ParamsError) as info:
        registry.check_params("widget", {"zzzzzz": 1}, skip=("size",))
    assert str(info.value) == (
        "unknown parameter of widget 'widget' (valid: width, rate, mode, flag)"
    )


def test_check_params_no_params_at_all(registry: Registry) -> None:
    with pytest.raises(ParamsError, match=r"\(valid: none\)$"):
        registry.check_params("_gadget", {"x": 1})


def test_check_params_skipped_param_is_unknown(registry: Registry) -> None:
    """Parameters that dlintro supplies itself may not be set by the user."""
    with pytest.raises(ParamsError, match=r"^unknown parameter of widget 'widget'"):
        registry.check_params("widget", {"size": 3}, skip=("size",))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"width": "3"}, "input should be a valid integer"),
        ({"width": 2.5}, "input should be a valid integer"),
        ({"width": True}, "input should be a valid integer"),
        ({"flag": "yes"}, "input should be a valid boolean"),
        ({"mode": "medium"}, "input should be 'fast' or 'slow'"),
        ({"rate": "0.1"}, "input should be a valid number"),
    ],
)
def test_check_params_wrong_type(registry: Registry, params: dict, message: str) -> None:
    with pytest.raises(ParamsError) as info:
        registry.check_params("widget", params, skip=("size",))
    ((key, _),) = params.items()
    assert str(info.value) == message
    assert info.value.errors[0] == ((key,), message, params[key])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"width": 0}, "input should be greater than or equal to 1"),
        ({"width": 11}, "input should be less than or equal to 10"),
        ({"rate": 0.0}, "input should be greater than 0"),
        ({"rate": 1.0}, "input should be less than 1"),
    ],
)
def test_check_params_out_of_range_states_bound(
    registry: Registry, params: dict, message: str
) -> None:
    with pytest.raises(ParamsError) as info:
        registry.check_params("widget", params, skip=("size",))
    assert str(info.value) == message
    ((key, value),) = params.items()
    assert info.value.errors == [((key,), message, value)]


def test_check_params_reports_every_bad_value(registry: Registry) -> None:
    with pytest.raises(ParamsError) as info:
        registry.check_params("widget", {"size": 1, "width": 0, "rate": 2.0})
    assert [e[0] for e in info.value.errors] == [("width",), ("rate",)]


def test_check_params_unknown_builder(registry: Registry) -> None:
    with pytest.raises(UnknownNameError, match="unknown widget 'nope'"):
        registry.check_params("nope", {})


# ----------------------------------------------------------------------------- validated


def test_validated_builder_rejects_bad_direct_call() -> None:
    assert _widget(size=1, width=10)["width"] == 10
    with pytest.raises(pydantic.ValidationError, match="less than or equal to 10"):
        _widget(size=1, width=11)
    with pytest.raises(pydantic.ValidationError, match="valid integer"):
        _widget(size="1")  # strict: no str -> int coercion
    with pytest.raises(pydantic.ValidationError):
        _widget(size=1, mode="medium")
    # ValidationError is a ValueError, which models.build turns into a UserError
    with pytest.raises(ValueError):
        _widget(size=1, rate=0.0)


def test_validated_keeps_name_and_signature() -> None:
    assert _widget.__name__ == "_widget"
    reg: Registry = Registry("widget")
    reg.register()(_widget)
    assert reg.names() == ["_widget"]


# ----------------------------------------------------------------------------- real registries


def test_models_registry() -> None:
    from dlintro.models import MODELS

    expected = {
        "softmax",
        "mlp",
        "mlp5",
        "mlp_16x16",
        "keras_mlp",
        "strided_convnet",
        "plain_convnet",
        "gorner_conv",
        "gorner_conv_big",
        "gorner_conv_bn",
        "keras_cnn",
        "tf_deep",
        "lenet5",
    }
    assert MODELS.kind == "model"
    assert expected <= set(MODELS.names())
    for name in MODELS.names():
        assert MODELS.meta(name)["description"], name
        families = {"mlp", "convnets", "lenet", "alexnet", "allcnn", "vgg", "nin", "inception"}
        families |= {"resnet", "cuda_convnet", "speednet"}
        assert MODELS.meta(name)["family"] in families, name


def test_model_builders_validate_params() -> None:
    from dlintro.models import MODELS, SUPPLIED

    MODELS.check_params("mlp5", {"dropout": 0.25, "activation": "sigmoid"}, SUPPLIED)
    with pytest.raises(ParamsError, match=r"^input should be less than 1$"):
        MODELS.check_params("mlp5", {"dropout": 1.5}, SUPPLIED)
    with pytest.raises(ParamsError, match=r"did you mean 'dropout'\?"):
        MODELS.check_params("mlp5", {"dropuot": 0.1}, SUPPLIED)
    with pytest.raises(ParamsError, match=r"^unknown parameter of model 'mlp5'"):
        MODELS.check_params("mlp5", {"num_classes": 3}, SUPPLIED)


def test_optimizers_registry() -> None:
    from dlintro.optim import OPTIMIZERS

    assert set(OPTIMIZERS.names()) == {
        "sgd", "adam", "adamw", "rmsprop", "adadelta", "adagrad", "adamax",
    }  # fmt: skip


def test_schedules_registry() -> None:
    from dlintro.optim import SCHEDULES

    assert set(SCHEDULES.names()) == {
        "constant",
        "exponential_decay",
        "piecewise_constant",
        "piecewise_linear",
        "cosine",
        "one_cycle",
        "reduce_on_plateau",
    }


def test_datasets_registry() -> None:
    from dlintro.data import DATASETS

    assert set(DATASETS.names()) == {
        "mnist", "fashion_mnist", "synthetic", "cifar10", "cifar100", "image_folder", "imagenet",
    }  # fmt: skip
    assert DATASETS.meta("mnist")["info"].num_classes == 10


def test_augmentations_registry() -> None:
    from dlintro.data import AUGMENTATIONS

    assert set(AUGMENTATIONS.names()) == {
        "random_translation",
        "random_rotation",
        "random_zoom",
        "random_flip",
        "alternating_flip",
        "random_crop",
        "cutout",
        "random_erasing",
        "mixup",
        "cutmix",
    }


# ----------------------------------------------------------------------------- create


@validated
def _sized(size: int, width: Annotated[int, Field(ge=1, le=10)] = 3, odd: bool = False) -> int:
    if odd and width % 2 == 0:
        raise ValueError(f"_sized wants an odd width. Received: width={width}")
    if width == 7:
        raise UserError("seven is refused as it is")
    return size * width


@pytest.fixture
def sized() -> Registry:
    reg: Registry = Registry("widget", supplied=("size",))
    reg.register("sized", family="test", description="a sized widget")(_sized)
    return reg


def test_create_passes_the_supplied_arguments_and_checks_the_rest(sized: Registry) -> None:
    assert sized.create("sized", 2, width=5) == 10
    assert list(sized.params("sized")) == ["width", "odd"]  # supplied names are skipped
    sized.check_params("sized", {"width": 4})  # default skip: the supplied names
    with pytest.raises(ParamsError) as info:
        sized.create("sized", 2, widht=5)
    assert str(info.value) == (
        "widget 'sized', parameter 'widht': unknown parameter of widget 'sized' "
        "(did you mean 'width'?)"
    )
    with pytest.raises(ParamsError, match=r"^widget 'sized', parameter 'width': input should be"):
        sized.create("sized", 2, width=11)
    with pytest.raises(ParamsError, match="unknown parameter"):
        sized.create("sized", 2, size=3)  # a supplied argument is not a param
    with pytest.raises(UnknownNameError, match="did you mean 'sized'"):
        sized.create("sizd", 2)
    with pytest.raises(TypeError, match="1 supplied arguments"):
        sized.create("sized", width=3)


def test_create_turns_a_builder_refusal_into_one_params_error(sized: Registry) -> None:
    with pytest.raises(ParamsError) as info:
        sized.create("sized", 1, width=4, odd=True)
    text = "_sized wants an odd width. Received: width=4"
    assert str(info.value) == f"widget 'sized': {text}"
    assert info.value.detail == text
    assert info.value.errors == [((), text, None)]
    with pytest.raises(UserError, match=r"^seven is refused as it is$") as refused:
        sized.create("sized", 1, width=7)  # a builder's own UserError passes as it is
    assert not isinstance(refused.value, ParamsError)
    assert sized.apply("sized", lambda s, width=3: s + width, 1, width=2) == 3  # a companion
    with pytest.raises(ParamsError, match="parameter 'width'"):
        sized.apply("sized", lambda s, width=3: s + width, 1, width=0)


# ----------------------------------------------------------------------------- variants


def test_variant_lists_its_own_parameters_and_fixes_the_others(sized: Registry) -> None:
    sized.register_variant("sized5", "sized", "width 5", width=5)
    sized.register_variant("sized_odd", "sized", "odd, width 4", width=4, odd=True, params=())
    sized.register_variant("sized_w", "sized", "default width 9", width=9, params=("width",))
    assert list(sized.params("sized5")) == ["odd"]
    assert list(sized.params("sized_odd")) == []
    assert {k: p.default for k, p in sized.params("sized_w").items()} == {"width": 9}
    assert list(sized.params("sized_w", skip=())) == ["size", "width"]
    assert sized.create("sized5", 2) == 10
    assert sized.create("sized_w", 2) == 18
    assert sized.create("sized_w", 2, width=1) == 2
    with pytest.raises(ParamsError, match=r"^widget 'sized5', parameter 'width': unknown"):
        sized.create("sized5", 2, width=3)  # fixed by the variant
    with pytest.raises(ParamsError, match=r"^widget 'sized_odd': _sized wants an odd width"):
        sized.create("sized_odd", 2)
    assert sized.meta("sized5") == {
        "family": "test", "description": "width 5", "base": "sized", "fixed": {"width": 5}
    }  # fmt: skip
    with pytest.raises(ValueError, match="has no parameter"):
        sized.register_variant("bad", "sized", "typo", widht=3)
    with pytest.raises(ValueError, match="registered twice"):
        sized.register_variant("sized5", "sized", "again", width=5)


def test_model_variants_keep_their_parameter_lists_and_defaults() -> None:
    from dlintro.models import MODELS

    def listed(name: str) -> dict[str, object]:
        return {k: p.default for k, p in MODELS.params(name).items()}

    assert listed("resnet20") == {"shortcut": "A"}
    assert listed("resnet50") == {}
    assert listed("gorner_conv_bn") == {
        "dropout": 0.25, "bn_scale": False, "bn_momentum": 0.999, "kernel_stddev": None,
        "bias_init": 0.1,
    }  # fmt: skip
    assert listed("vgg16_cifar") == {"dropout": 0.5, "batch_norm": True}
    assert MODELS.meta("resnet110")["family"] == "resnet"
    assert MODELS.meta("resnet110")["fixed"] == {"depth": 110}


def test_build_errors_are_one_params_error() -> None:
    from types import SimpleNamespace

    from dlintro import models, optim

    with pytest.raises(ParamsError) as info:
        models.build("resnet_cifar", (32, 32, 3), 10, {"depth": 21})
    assert str(info.value) == (
        "model 'resnet_cifar': resnet_cifar depth must be 6n+2 (20, 32, 44, 56, 110...). "
        "Received: depth=21"
    )
    with pytest.raises(ParamsError, match=r"^model 'mlp', parameter 'dropout': input should"):
        models.build("mlp", (28, 28, 1), 10, {"dropout": 1.5})
    clipped = SimpleNamespace(
        name="sgd", learning_rate=0.1, params={"clipnorm": 1.0, "clipvalue": 1.0}
    )
    constant = SimpleNamespace(name="constant", params={})
    with pytest.raises(ParamsError) as info:
        optim.build(clipped, constant, 10, 1)
    assert str(info.value) == (
        "optimizer/schedule: set at most one of global_clipnorm, clipnorm, clipvalue. "
        "Received: clipnorm, clipvalue"
    )
    warm = SimpleNamespace(name="cosine", params={"warmup_steps": 10})
    plain = SimpleNamespace(name="sgd", learning_rate=0.1, params={})
    with pytest.raises(ParamsError, match=r"^optimizer/schedule: warmup_steps must be below"):
        optim.build(plain, warm, 10, 1)
