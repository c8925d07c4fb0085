"""Phi-3-vision built from transformers' native `Phi3Model` and `CLIPVisionModel`.

Parameter names are exactly those of the released checkpoints, so `from_pretrained` reads a
downloaded microsoft/Phi-3-vision-128k-instruct (or Phi-3.5-vision-instruct) folder and
`save_pretrained` writes one the same way:

    model.embed_tokens / model.layers.N.{self_attn.qkv_proj,o_proj,mlp.gate_up_proj,down_proj}
    model.norm / lm_head
    model.vision_embed_tokens.img_processor.vision_model.*     (CLIP ViT, 4.x key layout)
    model.vision_embed_tokens.glb_GN [1, 1, 4C]   sub_GN [1, 1, 1, 4C]
    model.vision_embed_tokens.img_projection.{0,2}              (Linear, GELU, Linear)

The released remote code also stored the text embedding a second time as
`model.vision_embed_tokens.wte`; that key is accepted and ignored on load and never written.

Image embedding ("sub_glb" order, per image): CLIP hidden state `layer_idx` of every crop, CLS
dropped, 2x2 neighbouring patches concatenated (C -> 4C), the sub-crops laid out as their
h x w grid with `sub_GN` closing every row, then `glb_GN`, then the global view (crop 0) with
`sub_GN` closing every row; a 2-layer MLP projects to the LM width. The result replaces the
image-placeholder embeddings in order.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from transformers import CLIPVisionModel, GenerationMixin
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep
from transformers.models.phi3.modeling_phi3 import Phi3Model, Phi3PreTrainedModel
from transformers.utils import can_return_tuple

from vistune.errors import ModelError
from vistune.models.phi3v.configuration_phi3v import Phi3VConfig

__all__ = [
    "Phi3VForCausalLM",
    "Phi3VImageEmbedding",
    "Phi3VModel",
    "Phi3VPreTrainedModel",
    "Phi3VVisionTower",
    "image_token_mask",
]


def image_token_mask(input_ids: torch.Tensor, image_token_id: int) -> torch.Tensor:
    """Positions that receive image features: `<|image|>` ids, or the official processor's
    negative ids (-k for the k-th image)."""
    return (input_ids == image_token_id) | (input_ids < 0)


def _keeps_all(logits_to_keep: int | torch.Tensor) -> bool:
    """`logits_to_keep` asks for every position (the default 0)."""
    return isinstance(logits_to_keep, int) and logits_to_keep == 0


class Phi3VVisionTower(nn.Module):
    """CLIP vision tower kept under `vision_model`, the key layout of the released checkpoints.

    Only the encoder layers up to `img_processor.layer_idx` run (23 of 24 for the released
    models), so the unused last layer costs no compute. Its weights stay in the module so
    checkpoints round-trip unchanged.
    """

    def __init__(self, config: Phi3VConfig):
        super().__init__()
        self.vision_model = CLIPVisionModel(config.vision_config)
        self.num_feature_layers = config.vision_feature_layers

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, 3, c, c] crops -> [N, 1 + (c/p)^2, C] hidden state at `layer_idx`."""
        clip = self.vision_model
        # A float parameter gives the compute dtype even when Linear weights are quantized.
        hidden = clip.embeddings(pixel_values.to(clip.embeddings.class_embedding.dtype))
        hidden = clip.pre_layrnorm(hidden)
        for layer in clip.encoder.layers[: self.num_feature_layers]:
            hidden = layer(hidden, None)
        return hidden


class Phi3VImageEmbedding(nn.Module):
    """Turns padded crops + HD image sizes into one feature sequence per image."""

    def __init__(self, config: Phi3VConfig):
        super().__init__()
        self.crop_size = config.crop_size
        self.image_dim_out = config.img_processor["image_dim_out"]
        self.img_processor = Phi3VVisionTower(config)
        merged = 4 * self.image_dim_out
        # Learnable separators: glb_GN between sub-crops and global view, sub_GN ends each row.
        self.glb_GN = nn.Parameter(torch.zeros(1, 1, merged))
        self.sub_GN = nn.Parameter(torch.zeros(1, 1, 1, merged))
        self.img_projection = nn.Sequential(
            nn.Linear(merged, config.hidden_size),
            nn.GELU(),
            nn.Linear(config.hidden_size, config.hidden_size),
        )

    def crop_grids(self, image_sizes: torch.Tensor) -> list[tuple[int, int]]:
        """(rows, cols) of sub-crops per image from the HD-transformed (h, w)."""
        sizes = image_sizes.tolist()
        grids = []
        for i, (h, w) in enumerate(sizes):
            if h <= 0 or w <= 0 or h % self.crop_size or w % self.crop_size:
                raise ModelError(
                    f"image_sizes[{i}]=({h}, {w}) must be positive multiples of the crop size "
                    f"{self.crop_size}; use the Phi3VImageProcessor built for this model."
                )
            grids.append((h // self.crop_size, w // self.crop_size))
        return grids

    def merge_2x2(self, features: torch.Tensor) -> torch.Tensor:
        """[N, G*G, C] patch features -> [N, G/2, G/2, 4C] (each 2x2 block concatenated)."""
        n, length, channels = features.shape
        side = int(length**0.5)
        half = side // 2
        return (
            features.reshape(n, half, 2, half, 2, channels)
            .permute(0, 1, 3, 2, 4, 5)
            .reshape(n, half, half, 4 * channels)
        )

    def with_row_separators(self, grid: torch.Tensor) -> torch.Tensor:
        """[H, W, 4C] -> [H * (W + 1), 4C], `sub_GN` after every row."""
        rows = grid.shape[0]
        separator = self.sub_GN.reshape(1, 1, -1).to(grid.dtype).expand(rows, 1, -1)
        return torch.cat([grid, separator], dim=1).reshape(-1, grid.shape[-1])

    def forward(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
        """pixel_values [N_img, max_crops+1, 3, c, c] (crop 0 = global view, zero-padded),
        image_sizes [N_img, 2] -> [sum of image tokens, hidden] in image order."""
        if pixel_values.ndim != 5:
            raise ModelError(
                f"pixel_values must be [images, crops, 3, {self.crop_size}, {self.crop_size}], "
                f"got shape {tuple(pixel_values.shape)}."
            )
        if image_sizes.shape[0] != pixel_values.shape[0]:
            raise ModelError(
                f"pixel_values holds {pixel_values.shape[0]} images but image_sizes "
                f"{image_sizes.shape[0]}; pass one (h, w) per image."
            )
        grids = self.crop_grids(image_sizes)
        n_crops = [1 + rows * cols for rows, cols in grids]
        if max(n_crops) > pixel_values.shape[1]:
            raise ModelError(
                f"image_sizes ask for up to {max(n_crops)} crops but pixel_values has "
                f"{pixel_values.shape[1]} per image."
            )
        # One CLIP pass over every real crop of every image; padding crops are skipped.
        keep = (
            torch.arange(pixel_values.shape[1], device=pixel_values.device)[None, :]
            < (torch.tensor(n_crops, device=pixel_values.device)[:, None])
        )
        features = self.img_processor(pixel_values[keep])[:, 1:]  # CLS dropped
        merged = self.merge_2x2(features)  # [total_crops, g, g, 4C]
        side = merged.shape[1]

        sequences = []
        for per_image, (rows, cols) in zip(merged.split(n_crops), grids, strict=True):
            global_view, subs = per_image[0], per_image[1:]
            sub_grid = (
                subs.reshape(rows, cols, side, side, -1)
                .permute(0, 2, 1, 3, 4)
                .reshape(rows * side, cols * side, -1)
            )
            sequences += [
                self.with_row_separators(sub_grid),
                self.glb_GN.reshape(1, -1).to(merged.dtype),
                self.with_row_separators(global_view),
            ]
        tokens = torch.cat(sequences)
        # glb_GN is a plain float parameter: its dtype is the compute dtype even when the
        # projection's Linear weights are quantized (QLoRA).
        return self.img_projection(tokens.to(self.glb_GN.dtype))


class Phi3VPreTrainedModel(Phi3PreTrainedModel):
    config: Phi3VConfig
    config_class = Phi3VConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = [
        "Phi3DecoderLayer",
        "CLIPEncoderLayer",
        "Phi3VImageEmbedding",
    ]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = False
    _can_compile_fullgraph = False
    # The released remote code saved the text embedding twice (as the image module's `wte`).
    _keys_to_ignore_on_load_unexpected: ClassVar[list[str]] = [r"vision_embed_tokens\.wte\.weight"]
    input_modalities = ("image", "text")

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, Phi3VImageEmbedding):
            # As in the released code: separators start at zero and are learned.
            nn.init.zeros_(module.glb_GN)
            nn.init.zeros_(module.sub_GN)


class Phi3VModel(Phi3VPreTrainedModel, Phi3Model):
    """`Phi3Model` plus `vision_embed_tokens`; image features replace placeholder embeddings."""

    def __init__(self, config: Phi3VConfig):
        super().__init__(config)
        self.vision_embed_tokens = Phi3VImageEmbedding(config)
        self.post_init()

    def embed_multimodal(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Text embeddings with image features spliced in at the placeholder positions.

        `input_ids` is never modified: placeholder ids (32044 or the official negative ids)
        are embedded as token 0 in a copy and then overwritten by the image features.
        """
        mask = image_token_mask(input_ids, self.config.image_token_id)
        text_ids = input_ids.masked_fill(mask, 0)
        embeds = self.embed_tokens(text_ids)
        n_slots = int(mask.sum())
        if pixel_values is not None and pixel_values.shape[0] == 0:
            pixel_values = None  # a batch of text-only rows may carry an empty image tensor
        if pixel_values is None:
            if n_slots:
                raise ModelError(
                    f"input_ids hold {n_slots} image placeholder tokens but no pixel_values were "
                    "given; pass the processor's pixel_values and image_sizes."
                )
            return self._touch_vision_tower(embeds)
        if image_sizes is None:
            raise ModelError("pixel_values were given without image_sizes; pass both.")
        features = self.vision_embed_tokens(pixel_values, image_sizes)
        if features.shape[0] != n_slots:
            raise ModelError(
                f"input_ids hold {n_slots} image placeholder tokens but the "
                f"{pixel_values.shape[0]} image(s) give {features.shape[0]} features; build "
                "input_ids and pixel_values with the same processor settings (num_crops)."
            )
        slots = mask.unsqueeze(-1).expand_as(embeds)
        return embeds.masked_scatter(slots, features.to(embeds.dtype))

    def _touch_vision_tower(self, embeds: torch.Tensor) -> torch.Tensor:
        """Keep every trainable vision parameter in the graph of an image-free batch.

        Under DDP/FSDP a rank whose batch has no image would otherwise skip the vision tower,
        never produce its gradients, and hang the all-reduce. A dummy crop through the tower,
        added as `0 * output`, costs one small forward and changes nothing numerically.
        """
        if not (self.training and torch.is_grad_enabled()):
            return embeds
        vision = self.vision_embed_tokens
        if not any(p.requires_grad for p in vision.parameters()):
            return embeds
        crop = vision.crop_size
        dummy = embeds.new_zeros(1, 2, 3, crop, crop)
        sizes = torch.tensor([[crop, crop]], device=embeds.device)
        features = vision(dummy, sizes)
        return embeds + 0.0 * features.sum().to(embeds.dtype)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if inputs_embeds is None:
            decoding = pixel_values is None and cache is not None and cache.get_seq_length() > 0
            if decoding:
                # A decode step continues a prompt whose images are already in the cache: its
                # ids are generated text, never image slots, even if one equals `<|image|>`.
                inputs_embeds = self.embed_tokens(input_ids.clamp(min=0))
            else:
                inputs_embeds = self.embed_multimodal(input_ids, pixel_values, image_sizes)
        elif pixel_values is not None:
            raise ValueError("pixel_values need input_ids to locate the image placeholders.")
        return super().forward(
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )


class Phi3VForCausalLM(Phi3VPreTrainedModel, GenerationMixin):
    """Phi-3-vision with its LM head; loads and saves the released checkpoint layout."""

    _tied_weights_keys: ClassVar[dict[str, str]] = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan: ClassVar[dict[str, str]] = {"lm_head": "colwise_gather_output"}
    _pp_plan: ClassVar[dict[str, Any]] = {"lm_head": (["hidden_states"], ["logits"])}

    def __init__(self, config: Phi3VConfig):
        super().__init__(config)
        self.model = Phi3VModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            pixel_values=pixel_values,
            image_sizes=image_sizes,
            use_cache=use_cache,
            **kwargs,
        )
        if labels is not None and ((labels < 0) & (labels != -100)).any():
            raise ModelError(
                "labels hold negative ids other than -100 (the official processor's image "
                "placeholders?); set labels to -100 at image positions."
            )
        if labels is not None and self.training and _keeps_all(logits_to_keep):
            loss = self._labelled_positions_loss(outputs.last_hidden_state, labels, **kwargs)
            logits = None
        else:
            hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
            logits = self.lm_head(hidden_states)
            loss = None
            if labels is not None:
                loss = self.loss_function(
                    logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs
                )
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def _labelled_positions_loss(
        self,
        hidden_states: torch.Tensor,
        labels: torch.Tensor,
        shift_labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """The training loss from the positions that predict a labelled token only.

        A Phi-3-vision sample is mostly image and prompt positions (757 of about 820 tokens at
        4 crops, 2,509 of about 2,570 at 16) whose logits the loss ignores; computing them
        costs a vocabulary-wide matmul per position and holds the logits, their fp32 upcast
        and gradient (about 1 GB per sample at 16 crops in fp32). Picking the predicting rows
        first gives the same loss and gradients (the same `loss_function`, the same
        `num_items_in_batch` normalisation). Training only: the output carries no logits,
        as in Liger's fused cross-entropy; evaluation and generation get full logits.
        """
        if shift_labels is None:
            padded = nn.functional.pad(labels, (0, 1), value=-100)
            shift_labels = padded[..., 1:]
        shift_labels = shift_labels.to(hidden_states.device)
        keep = shift_labels != -100
        logits = self.lm_head(hidden_states[keep])
        return self.loss_function(
            logits=logits,
            labels=None,
            vocab_size=self.config.vocab_size,
            shift_labels=shift_labels[keep],
            **kwargs,
        )

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        cache: Cache | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        is_first_iteration: bool | None = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Images enter only the prefill step; later steps read them from the KV cache.

        As in transformers' Phi3ForCausalLM: when the sequence first grows past
        `original_max_position_embeddings`, longrope switches from short to long factors and the
        cache (built with short ones) is dropped and recomputed, images included.
        """
        original_max = self.config.original_max_position_embeddings
        if (
            cache is not None
            and input_ids.shape[1] > original_max
            and cache.get_seq_length() <= original_max
        ):
            cache.reset()
            kwargs["next_sequence_length"] = None
            is_first_iteration = True
        model_inputs = super().prepare_inputs_for_generation(
            input_ids,
            cache=cache,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            is_first_iteration=is_first_iteration,
            **kwargs,
        )
        ids = model_inputs.get("input_ids")
        if (
            pixel_values is not None
            and (is_first_iteration or not kwargs.get("use_cache", True))
            # a continued cache may already hold every image of the prompt
            and ids is not None
            and image_token_mask(ids, self.config.image_token_id).any()
        ):
            model_inputs["pixel_values"] = pixel_values
            model_inputs["image_sizes"] = image_sizes
        return model_inputs
