"""The guide's condition for classifier-free guidance: what "unconditional" means for each model type.

DiT-style label dropout's extra class, the label a class-conditional UNet was trained with, the encoded empty
prompt of a text model (see :func:`null_condition`). Re-exported from :mod:`edm_samplers.guidance`, whose
:func:`~edm_samplers.guided` takes the result as ``guide_cond=``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = ["null_condition"]

_TEXT_KEYS = (
    "encoder_hidden_states", "pooled_projections", "encoder_attention_mask", "added_cond_kwargs", "prompt_embeds",
    "text_embeds", "encoder_hidden_states_mask",
)  # fmt: skip
"""Keyword arguments that carry a text condition: their null value is the encoded empty prompt (the user's)."""


def _network_of(model: object) -> object:
    """The network inside adapters, preconditioners and guided denoisers (``.model`` / ``.net`` / ``.main``)."""
    for _ in range(8):
        inner = next((getattr(model, a) for a in ("model", "net", "main") if hasattr(model, a)), None)
        if inner is None or inner is model:
            break
        model = inner
    return model


def _null_class_of(net: object) -> int:
    """The class index a network reserves for "no class", or a ValueError saying what to pass instead."""
    name = type(net).__name__
    modules = net.modules() if isinstance(net, torch.nn.Module) else ()
    for m in modules:  # DiT-style: diffusers' LabelEmbedding has one extra row when trained with label dropout
        if type(m).__name__ == "LabelEmbedding" and hasattr(m, "num_classes") and hasattr(m, "dropout_prob"):
            if float(getattr(m, "dropout_prob")) > 0:  # noqa: B009 (mypy: Module attributes are Tensor | Module)
                return int(getattr(m, "num_classes"))  # noqa: B009
            raise ValueError(
                f"{name}'s label embedding was built without label dropout (class_dropout_prob = 0): it has no "
                "null class to guide with; pass null_class= the label your model was trained with for 'no class'"
            )
    config = getattr(net, "config", None)
    embed_type = getattr(config, "class_embed_type", None)
    num = getattr(config, "num_class_embeds", None)
    if embed_type is not None or num is not None:
        raise ValueError(
            f"{name} (class_embed_type={embed_type!r}, num_class_embeds={num}) reserves no null class: diffusers "
            "gives every row of its class embedding to a class, so 'unconditional' is whatever label the model "
            "was trained with for dropped labels. Pass null_class= that label (commonly num_class_embeds - 1 "
            "for an index, 0 or a zero vector for class_embed_type='timestep' / 'identity')"
        )
    raise ValueError(
        f"cannot tell the null class of {name}: pass null_class= the label your model was trained with for "
        "'no class' (DiT-style models: num_classes; models trained with class dropout usually reserve the last index)"
    )


def _like(null: object, value: object, key: str) -> object:
    """``null`` shaped like the condition ``value`` it replaces: a [1, ...] tensor expands to [batch, ...]."""
    if isinstance(null, Mapping) and isinstance(value, Mapping):
        return {k: _like(v, value.get(k), f"{key}[{k!r}]") for k, v in null.items()}
    if (
        isinstance(null, Tensor)
        and isinstance(value, Tensor)
        and null.ndim == value.ndim >= 1
        and null.shape[0] == 1
        and value.shape[0] > 1
        and null.shape[1:] == value.shape[1:]
    ):
        return null.expand(value.shape)
    return null


def null_condition(
    model: object, cond: Mapping[str, Any], *, null_class: int | float | Tensor | None = None, **null: Any
) -> dict[str, Any]:
    """The guide's condition for classifier-free guidance with ``model``: pass it as ``guided(..., guide_cond=)``.

    "Unconditional" depends on how the model was trained, so it differs per model type:

    - **Class-conditional transformers with label dropout** (diffusers' ``DiTTransformer2DModel``; any model
      holding a diffusers ``LabelEmbedding`` with ``dropout_prob > 0``): ``class_labels`` = ``num_classes``, the
      extra "dropped label" row of the embedding table (``DiTPipeline`` uses 1000 for ImageNet's 1000 classes).
      ``None`` fails there (the embedding needs an index).
    - **Class-conditional ``UNet2DModel``** (``num_class_embeds`` or ``class_embed_type``): diffusers reserves no
      null class and fails on ``class_labels=None``; the label a CFG-trained model uses for dropped labels is
      the trainer's choice. Pass it as ``null_class`` (a ValueError says so otherwise).
    - **Text-conditioned models** (``encoder_hidden_states``, ``pooled_projections``, ``added_cond_kwargs``, ...):
      the text encoder's output for the empty prompt ``""`` (or a negative prompt), which only the caller can
      compute: pass each by name, e.g. ``null_condition(unet, cond, encoder_hidden_states=empty)``. A ``[1, ...]``
      tensor is expanded to the batch of the condition it replaces (a view).
    - Anything else: ``null_class`` for ``class_labels`` and keyword overrides for other keys. Keys not
      named are shared by both calls (timestep conditions, position ids, flags).

    Args:
        model: the denoiser (an adapter from :func:`~edm_samplers.from_diffusers`, a preconditioner) or the
            network itself; adapters are looked through (``.model`` / ``.net``).
        cond: the condition of the main call (what the sampler gets as ``cond=``).
        null_class: the null label (overrides the model's own convention).
        **null: null values of other keys of ``cond``.

    Returns:
        The overrides for the guide call: ``class_labels`` (when in ``cond``) and the named keys. Tensors keep
        the shape, dtype and device of the values they replace, so batched CFG applies.

    Raises:
        ValueError: a text key of ``cond`` without its null value, a key not in ``cond``, or class labels whose
            null class the model does not tell (with what to pass).
    """
    if not isinstance(cond, Mapping):
        raise TypeError(f"cond must be the mapping of keyword arguments of the main call, got {type(cond).__name__}")
    extra = sorted(set(null) - set(cond))
    if extra:
        raise ValueError(f"null values given for {extra}, which are not keys of cond ({sorted(cond)}); check the names")
    out: dict[str, Any] = {k: _like(v, cond[k], k) for k, v in null.items()}
    if "class_labels" in cond and "class_labels" not in null:
        labels = cond["class_labels"]
        value = null_class if null_class is not None else _null_class_of(_network_of(model))
        if isinstance(labels, Tensor) and not isinstance(value, Tensor):
            out["class_labels"] = torch.full_like(labels, value)
        else:
            out["class_labels"] = _like(value, labels, "class_labels")
    elif null_class is not None:
        raise ValueError("null_class was given but cond has no 'class_labels'")
    missing = [k for k in _TEXT_KEYS if k in cond and k not in out]
    if missing:
        raise ValueError(
            f"cond holds the text condition {missing}: its null value is the text encoder's output for the empty "
            f'prompt "" (or a negative prompt), which only you can compute; pass it, e.g. '
            f"null_condition(model, cond, {missing[0]}=empty_prompt_{missing[0]})"
        )
    return out
