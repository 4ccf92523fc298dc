"""Name -> builder registries, in the spirit of torchvision's ``get_model`` and timm's registry.

Builders are keyword-only callables. A spec refers to models, backbones, heads, datasets, loss
terms, input/target makers, post-processors and metric families by their registered names; an
unknown name fails with the list of the names that do exist.

A builder that rejects an option raises :class:`ConfigError` naming the option's key, so a spec
validator can point at the line that set it (``variants[2].model.k``). A model registered with
an ``example`` (tiny keyword arguments) is covered by the generated tests in
``tests/test_registry_models.py`` without any new test code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


class ConfigError(ValueError):
    """A builder option is invalid: ``key`` is the option's name (dotted for nested options,
    e.g. ``backbone_options.output_stride``), ``message`` says what was expected."""

    def __init__(self, key: str, message: str) -> None:
        self.key, self.message = key, message
        super().__init__(f"{key}: {message}")

    def within(self, prefix: str) -> ConfigError:
        """The same error with its key nested under ``prefix`` (e.g. ``backbone_options``)."""
        return ConfigError(f"{prefix}.{self.key}", self.message)


class Registry:
    """A small mapping from names to builders with a decorator for registration.

    ``register(name, **metadata)`` may attach facts about the builder that callers need
    without building it: a model's tiny ``example`` options (for generated tests), a
    dataset's ``class_names``, ``input_size(options)`` and ``check(options)``.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., Any]] = {}
        self._metadata: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **metadata: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._builders[name] = builder
            self._metadata[name] = metadata
            return builder

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        try:
            return self._builders[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._builders))}") from None

    def build(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def metadata(self, name: str) -> dict[str, Any]:
        self.get(name)
        return self._metadata[name]

    def example(self, name: str) -> dict[str, Any] | None:
        """The tiny keyword arguments a builder was registered with, for generated tests."""
        return self._metadata.get(name, {}).get("example")

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._builders))

    def names(self) -> list[str]:
        return sorted(self._builders)


MODELS = Registry("model")
BACKBONES = Registry("backbone")
HEADS = Registry("head")
DATASETS = Registry("dataset")
LOSSES = Registry("loss")
INPUTS = Registry("model input")  # extra model inputs made from a batch (e.g. image gradients)
TARGETS = Registry("target")  # extra training targets made from a batch (e.g. boundary maps)
POSTPROCESSORS = Registry("post-processor")  # evaluation post-processing of class probabilities (e.g. a CRF)
METRIC_FAMILIES = Registry("metric family")  # evaluation metrics beyond the confusion matrix
INFERENCE = Registry("inference mode")  # how evaluation turns an image into logits (whole image, sliding window...)
# evaluations of the trained model after the run's own, each asked for by the eval key of its name
# (``eval.crop_factors = [...]``): ``(value, model, dataset, **evaluation) -> metrics``; metadata:
# ``value_type``, ``check(value)`` (raises ConfigError), ``metrics(value, families) -> names``
EVALUATIONS = Registry("post-training evaluation")
