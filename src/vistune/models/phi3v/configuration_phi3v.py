"""Configuration for Phi-3-vision (`model_type: "phi3_v"`) on transformers 5.x.

The official `config.json` of microsoft/Phi-3-vision-128k-instruct and Phi-3.5-vision-instruct
is a Phi-3 text config plus two dicts describing the image side (`embd_layer`,
`img_processor`), an `auto_map` pointing at remote code, and `_attn_implementation:
flash_attention_2`. This config reads that file as is, so no remote code is needed:

- the text part is transformers' own `Phi3Config` (including its handling of the legacy
  `rope_scaling` of type "su"/"longrope", which becomes `rope_parameters`);
- the vision tower is a `CLIPVisionConfig` in `vision_config`. The official file has none: it
  only names `openai/clip-vit-large-patch14-336`, whose architecture we write down here, so a
  model can be built offline. Tiny test models pass an explicit small `vision_config`;
- `flash_attention_2` in the file falls back to sdpa when flash-attn is not installed (asking
  for it explicitly in `from_pretrained(attn_implementation=...)` still fails loudly);
- `auto_map` is dropped, so a saved model never points back at remote code; the saved file
  keeps the legacy `rope_scaling` (in its original "su"/"longrope" spelling) and `rope_theta`
  next to transformers 5's `rope_parameters`, so older readers get the same rope.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict
from transformers import CLIPVisionConfig, Phi3Config
from transformers.configuration_utils import SubConfigSpec
from transformers.utils import is_flash_attn_2_available

__all__ = ["CLIP_VIT_L_14_336", "DEFAULT_EMBD_LAYER", "DEFAULT_IMG_PROCESSOR", "Phi3VConfig"]

#: The vision tower of the released checkpoints (openai/clip-vit-large-patch14-336).
CLIP_VIT_L_14_336: dict[str, Any] = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 336,
    "patch_size": 14,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
    "layer_norm_eps": 1e-5,
    "num_channels": 3,
}

#: Vision towers we can build from `img_processor.model_name` without downloading anything.
KNOWN_VISION_TOWERS: dict[str, dict[str, Any]] = {
    "openai/clip-vit-large-patch14-336": CLIP_VIT_L_14_336,
}

DEFAULT_EMBD_LAYER: dict[str, Any] = {
    "embedding_cls": "image",
    "hd_transform_order": "sub_glb",
    "projection_cls": "mlp",
    "use_hd_transform": True,
    "with_learnable_separator": True,
}

#: `image_dim_out` and `num_img_tokens` default to what the vision tower gives (1024 and 144
#: for the released models).
DEFAULT_IMG_PROCESSOR: dict[str, Any] = {
    "model_name": "openai/clip-vit-large-patch14-336",
    "name": "clip_vision_model",
    "layer_idx": -2,
    "type_feature": "patch",
}


def _normalise_legacy_rope(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Read the released `rope_scaling.type: "su"` as "longrope" before Phi3Config sees it.

    transformers 5.23 renames "su" only after it has decided which keys a scaled rope needs, so
    `original_max_position_embeddings` is never copied in and validation fails on the released
    file. Setting `rope_type` first takes the normal "longrope" path; the legacy `type` stays
    (validation ignores it) so `to_dict` can write the spelling the remote code expects. The
    input is not mutated.
    """
    scaling = kwargs.get("rope_scaling")
    if isinstance(scaling, dict) and "su" in (scaling.get("type"), scaling.get("rope_type")):
        scaling = {**scaling, "type": "su", "rope_type": "longrope"}
        kwargs = {**kwargs, "rope_scaling": scaling}
    return kwargs


def _explicit_longrope_factor(
    rope: dict[str, Any], max_positions: int | None, original: int | None
) -> dict[str, Any]:
    """Spell out longrope's `factor` (max / original positions) when the file leaves it out.

    Phi-3 configs give only the two position counts; transformers then derives the same
    factor but warns on every load that `factor` should be set. Setting it to the value it
    would derive changes no frequency or attention scale (the longrope check in
    `benchmarks/full_size.py` and the config tests derive them from the file alone).
    """
    if rope.get("rope_type") != "longrope" or rope.get("factor") is not None:
        return rope
    original = rope.get("original_max_position_embeddings") or original
    if not (max_positions and original):
        return rope
    return {**rope, "factor": max_positions / original}


@strict
class Phi3VConfig(Phi3Config):
    r"""Phi-3-vision: a Phi-3 language model with a CLIP vision tower and an HD image embedding.

    Args (beyond `Phi3Config`):
        embd_layer: the official image-embedding options (`use_hd_transform`,
            `with_learnable_separator`, `hd_transform_order` = "sub_glb", `projection_cls` = "mlp").
        img_processor: the official vision-tower options (`image_dim_out`, `num_img_tokens`,
            `model_name`, `name`, optional `layer_idx` = -2 and `type_feature` = "patch").
        vision_config: a `CLIPVisionConfig` (or dict). Derived from `img_processor.model_name`
            when absent.
        image_token_id: id of `<|image|>`, the placeholder the processor repeats once per image
            feature (32044 in the released tokenizer).
    """

    model_type = "phi3_v"
    sub_configs_defaults: ClassVar[dict[str, SubConfigSpec]] = {
        "vision_config": SubConfigSpec(config_class=CLIPVisionConfig, init_kwargs=CLIP_VIT_L_14_336)
    }

    embd_layer: dict | None = None
    img_processor: dict | None = None
    vision_config: dict | CLIPVisionConfig | None = None
    image_token_id: int = 32044

    def __post_init__(self, **kwargs):
        # The released config.json points at remote code; a native model must never save that.
        kwargs.pop("auto_map", None)
        requested_attn = kwargs.pop("_attn_implementation", None)
        if requested_attn is None:
            requested_attn = kwargs.pop("attn_implementation", None)
        if requested_attn == "flash_attention_2" and not is_flash_attn_2_available():
            # The released file asks for flash-attn, which most machines lack: use sdpa.
            requested_attn = None
        if requested_attn is not None:
            kwargs["attn_implementation"] = requested_attn

        kwargs = _normalise_legacy_rope(kwargs)

        self.embd_layer = {**DEFAULT_EMBD_LAYER, **(self.embd_layer or {})}
        img_processor = {**DEFAULT_IMG_PROCESSOR, **(self.img_processor or {})}
        if self.vision_config is None:
            self.vision_config = self._vision_config_for(img_processor["model_name"])
        super().__post_init__(**kwargs)  # builds the CLIPVisionConfig
        img_processor.setdefault("image_dim_out", self.vision_config.hidden_size)
        img_processor.setdefault("num_img_tokens", self.tokens_per_crop)
        self.img_processor = img_processor
        self._check_image_embedding()

    def convert_rope_params_to_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        kwargs = super().convert_rope_params_to_dict(*args, **kwargs)
        self.rope_parameters = _explicit_longrope_factor(
            self.rope_parameters,
            self.max_position_embeddings,
            self.original_max_position_embeddings,
        )
        return kwargs

    @staticmethod
    def _vision_config_for(model_name: str) -> dict[str, Any]:
        if model_name not in KNOWN_VISION_TOWERS:
            raise ValueError(
                f"config.json: img_processor.model_name={model_name!r} is not a vision tower "
                f"vistune can build offline (known: {sorted(KNOWN_VISION_TOWERS)}); add an "
                "explicit "
                "`vision_config` (a CLIPVisionConfig dict) to config.json."
            )
        return copy.deepcopy(KNOWN_VISION_TOWERS[model_name])

    def _check_image_embedding(self) -> None:
        """Fail early, naming the field, when the image side cannot work as configured."""
        embd, proc, vision = self.embd_layer, self.img_processor, self.vision_config
        if embd.get("embedding_cls", "image") != "image":
            raise ValueError(
                f"config.json: embd_layer.embedding_cls={embd['embedding_cls']!r} is not supported "
                "(only 'image')."
            )
        if not (embd.get("use_hd_transform") and embd.get("with_learnable_separator")):
            raise ValueError(
                "config.json: embd_layer.use_hd_transform and with_learnable_separator must "
                "both be true (the only layout Phi-3-vision checkpoints use)."
            )
        if embd.get("hd_transform_order", "sub_glb") != "sub_glb":
            raise ValueError(
                f"config.json: embd_layer.hd_transform_order={embd['hd_transform_order']!r} is not "
                "supported (only 'sub_glb')."
            )
        if embd.get("projection_cls", "mlp") != "mlp":
            raise ValueError(
                f"config.json: embd_layer.projection_cls={embd['projection_cls']!r} is not "
                "supported (only 'mlp')."
            )
        if proc.get("type_feature", "patch") != "patch":
            raise ValueError(
                f"config.json: img_processor.type_feature={proc['type_feature']!r} is not "
                "supported (only 'patch')."
            )
        if proc["image_dim_out"] != vision.hidden_size:
            raise ValueError(
                f"config.json: img_processor.image_dim_out={proc['image_dim_out']} differs from "
                f"the vision tower's hidden_size={vision.hidden_size}; make them equal."
            )
        grid = vision.image_size // vision.patch_size
        if vision.image_size % vision.patch_size or grid % 2:
            raise ValueError(
                f"config.json: vision image_size={vision.image_size} must be an even multiple of "
                f"patch_size={vision.patch_size} (patches are merged 2x2)."
            )
        if proc["num_img_tokens"] != self.tokens_per_crop:
            raise ValueError(
                f"config.json: img_processor.num_img_tokens={proc['num_img_tokens']} but the "
                f"vision tower gives {self.tokens_per_crop} tokens per crop "
                f"(({vision.image_size}/{vision.patch_size}/2)^2); fix num_img_tokens."
            )
        n_layers = vision.num_hidden_layers
        if not -n_layers - 1 <= proc["layer_idx"] <= n_layers:
            raise ValueError(
                f"config.json: img_processor.layer_idx={proc['layer_idx']} is outside the vision "
                f"tower's hidden states (-{n_layers + 1}..{n_layers})."
            )

    def to_dict(self) -> dict[str, Any]:
        """Serialise, adding the legacy `rope_scaling`/`rope_theta` keys the released remote code
        and older tools read, so an exported folder keeps its rope whatever loads it."""
        output = super().to_dict()
        rope = output.get("rope_parameters")
        if isinstance(rope, dict) and "rope_theta" in rope:
            output["rope_theta"] = rope["rope_theta"]
            if rope.get("rope_type", "default") != "default":
                legacy = {k: v for k, v in rope.items() if k.endswith("_factor")}
                legacy.pop("partial_rotary_factor", None)
                legacy["type"] = rope.get("type", rope["rope_type"])
                output["rope_scaling"] = legacy
        return output

    @property
    def crop_size(self) -> int:
        """Side of one square crop in pixels (336 for the released models)."""
        return self.vision_config.image_size

    @property
    def tokens_per_crop(self) -> int:
        """Image tokens per crop after the 2x2 patch merge (144 for the released models)."""
        side = self.vision_config.image_size // self.vision_config.patch_size // 2
        return side * side

    @property
    def vision_feature_layers(self) -> int:
        """How many CLIP encoder layers run: hidden state `layer_idx` needs exactly these."""
        idx = self.img_processor["layer_idx"]
        return idx if idx >= 0 else self.vision_config.num_hidden_layers + 1 + idx
