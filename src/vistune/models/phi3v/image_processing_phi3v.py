"""Phi-3-vision image processor: the official HD transform, without torchvision.

The official remote code (`image_processing_phi3_v.py`) resizes, pads and crops with
torchvision. This re-implementation uses Pillow for the geometric steps (torchvision's
resize/pad on a PIL image call exactly these Pillow operations) and numpy/torch for the
arithmetic, so it runs in DataLoader workers on machines without torchvision and gives the
same numbers as the official processor.

Per image:
1. transpose a tall image so that width >= height;
2. pick the largest `scale` with `scale * ceil(scale / ratio) <= num_crops` (ratio = w / h);
3. resize (bilinear) to width `scale * c`, height `int(width / ratio)`;
4. pad the height to a multiple of `c`, centred, with white; transpose back;
5. normalise with CLIP's mean/std; the global view is a bicubic resize of the normalised
   HD image to `c x c`; the HD image is cut into `c x c` crops, row-major;
6. `[global, crop_1, ..., crop_k]` is zero-padded to `num_crops + 1` crops.

`c` is the crop size (336 for the official checkpoints; tiny test models write their own).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from vistune.errors import ImageError

DEFAULT_CROP_SIZE = 336
DEFAULT_TOKENS_PER_CROP = 144


def num_image_tokens(height: int, width: int, crop_size: int, tokens_per_crop: int) -> int:
    """Image tokens the model emits for an HD-transformed image of `height` x `width` pixels.

    `((h//c)*(w//c) + 1) * t` crop and global-view features, `+ 1` for the `glb_GN`
    separator and `(h//c + 1) * sqrt(t)` row separators (`sub_GN`), one per feature row of
    the sub-crop grid and of the global view. For c=336, t=144: 2,509 for a square image
    at 16 crops (1344 x 1344), 757 at 4 crops (672 x 672).
    """
    side = math.isqrt(tokens_per_crop)
    if side * side != tokens_per_crop:
        raise ValueError(f"tokens_per_crop must be a square number, got {tokens_per_crop}")
    rows, cols = height // crop_size, width // crop_size
    return (rows * cols + 1) * tokens_per_crop + 1 + (rows + 1) * side


def hd_scale(width: int, height: int, num_crops: int) -> int:
    """Largest `scale` with `scale * ceil(scale / ratio) <= num_crops` (width >= height).

    Float arithmetic exactly as the official code, so boundary cases pick the same scale.
    """
    ratio = width / height
    scale = 1
    while scale * np.ceil(scale / ratio) <= num_crops:
        scale += 1
    return scale - 1


def hd_transform_size(
    width: int, height: int, num_crops: int, crop_size: int = DEFAULT_CROP_SIZE
) -> tuple[int, int]:
    """(height, width) of the padded HD image for an input of `width` x `height` pixels."""
    transposed = width < height
    if transposed:
        width, height = height, width
    scale = hd_scale(width, height, num_crops)
    new_w = scale * crop_size
    new_h = max(1, int(new_w / (width / height)))
    padded_h = math.ceil(new_h / crop_size) * crop_size
    return (new_w, padded_h) if transposed else (padded_h, new_w)


def hd_transform(
    image: Image.Image, num_crops: int, crop_size: int = DEFAULT_CROP_SIZE
) -> Image.Image:
    """Resize and white-pad an RGB image so both sides are multiples of `crop_size`."""
    width, height = image.size
    transposed = width < height
    if transposed:
        image = image.transpose(Image.Transpose.TRANSPOSE)
        width, height = image.size
    scale = hd_scale(width, height, num_crops)
    new_w = scale * crop_size
    # The official code takes int(new_w / ratio); extreme panoramas would reach 0 rows.
    new_h = max(1, int(new_w / (width / height)))
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    padded_h = math.ceil(new_h / crop_size) * crop_size
    top = int((padded_h - new_h) / 2)
    canvas = Image.new("RGB", (new_w, padded_h), (255, 255, 255))
    canvas.paste(image, (0, top))
    if transposed:
        canvas = canvas.transpose(Image.Transpose.TRANSPOSE)
    return canvas


class Phi3VImageProcessor(BaseImageProcessor):
    """HD-transform image processor of Phi-3-vision, reading the official config file.

    Attributes mirror the official `preprocessor_config.json`: `num_crops` (max sub-crops),
    `num_img_tokens` (features per crop: 144 for 336-px crops), `image_mean`, `image_std`,
    `do_convert_rgb`; `crop_size` (pixels per crop side) is vistune's addition, defaulting to
    the official 336. The official file's `auto_map` points at remote code and is dropped.
    """

    model_input_names = ["pixel_values", "image_sizes"]  # noqa: RUF012 (transformers API)

    def __init__(
        self,
        num_crops: int = 1,
        num_img_tokens: int = DEFAULT_TOKENS_PER_CROP,
        crop_size: int = DEFAULT_CROP_SIZE,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        do_convert_rgb: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("auto_map", None)  # remote code: never followed, never saved back
        kwargs.pop("image_processor_type", None)
        super().__init__(**kwargs)
        if isinstance(crop_size, dict):  # tolerate {"height": c, "width": c}
            crop_size = int(crop_size.get("height", crop_size.get("width", DEFAULT_CROP_SIZE)))
        if int(num_crops) < 1:
            raise ValueError(f"num_crops must be >= 1, got {num_crops}")
        self.num_crops = int(num_crops)
        self.num_img_tokens = int(num_img_tokens)
        self.crop_size = int(crop_size)
        self.image_mean = list(image_mean if image_mean is not None else OPENAI_CLIP_MEAN)
        self.image_std = list(image_std if image_std is not None else OPENAI_CLIP_STD)
        self.do_convert_rgb = bool(do_convert_rgb)

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output.pop("auto_map", None)
        # Lets AutoProcessor find the processor from a processor-only folder (adapters).
        output["processor_class"] = "Phi3VProcessor"
        return output

    def num_tokens_for(self, image: Image.Image, num_crops: int | None = None) -> int:
        """Image tokens this image expands to (without running the transform)."""
        h, w = hd_transform_size(*image.size, num_crops or self.num_crops, self.crop_size)
        return num_image_tokens(h, w, self.crop_size, self.num_img_tokens)

    def _to_rgb(self, image: Any, do_convert_rgb: bool) -> Image.Image:
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        if not isinstance(image, Image.Image):
            raise ImageError(
                f"Phi3VImageProcessor expects PIL images or HxWxC uint8 arrays, got "
                f"{type(image).__name__}; open files with PIL.Image.open first"
            )
        if image.mode != "RGB":
            if not do_convert_rgb:
                raise ImageError(f"image mode {image.mode!r} is not RGB and do_convert_rgb=False")
            if image.mode in ("RGBA", "LA", "P"):  # composite transparency on white
                rgba = image.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(background, rgba)
            image = image.convert("RGB")
        return image

    def _process_one(
        self, image: Image.Image, num_crops: int, mean: np.ndarray, std: np.ndarray
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        c = self.crop_size
        hd = hd_transform(image, num_crops, c)
        # Channel planes first, then (x / 255 - mean) / std as one scale and one shift per
        # plane: long contiguous loops, ~10x faster than broadcasting over an HxWx3 array.
        planes = np.stack([np.asarray(channel) for channel in hd.split()]).astype(np.float32)
        planes *= (1.0 / (255.0 * std))[:, None, None]
        planes -= (mean / std)[:, None, None]
        hd_tensor = torch.from_numpy(planes)
        h, w = hd_tensor.shape[1:]
        global_view = torch.nn.functional.interpolate(
            hd_tensor[None], size=(c, c), mode="bicubic", align_corners=False
        )
        crops = (
            hd_tensor.reshape(3, h // c, c, w // c, c).permute(1, 3, 0, 2, 4).reshape(-1, 3, c, c)
        )
        out = torch.zeros(num_crops + 1, 3, c, c, dtype=torch.float32)
        out[0] = global_view[0]
        out[1 : 1 + crops.shape[0]] = crops
        return out, (h, w)

    def preprocess(
        self,
        images: Image.Image | Sequence[Image.Image],
        num_crops: int | None = None,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        do_convert_rgb: bool | None = None,
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        """`pixel_values` [N, num_crops+1, 3, c, c], `image_sizes` [N, 2], `num_img_tokens`."""
        if kwargs:
            raise TypeError(f"unexpected arguments for Phi3VImageProcessor: {sorted(kwargs)}")
        num_crops = int(num_crops or self.num_crops)
        do_convert_rgb = self.do_convert_rgb if do_convert_rgb is None else do_convert_rgb
        mean = np.asarray(image_mean if image_mean is not None else self.image_mean, np.float32)
        std = np.asarray(image_std if image_std is not None else self.image_std, np.float32)
        if isinstance(images, Image.Image | np.ndarray):
            images = [images]
        tensors, sizes = [], []
        for image in images:
            pixels, size = self._process_one(
                self._to_rgb(image, do_convert_rgb), num_crops, mean, std
            )
            tensors.append(pixels)
            sizes.append(size)
        c = self.crop_size
        counts = [num_image_tokens(h, w, c, self.num_img_tokens) for h, w in sizes]
        pixel_values = torch.stack(tensors) if tensors else torch.zeros(0, num_crops + 1, 3, c, c)
        data = {
            "pixel_values": pixel_values,
            "image_sizes": torch.tensor(sizes, dtype=torch.long).reshape(-1, 2),
            "num_img_tokens": counts,
        }
        if return_tensors not in ("pt", None):
            raise ValueError(
                f"Phi3VImageProcessor returns torch tensors only, got {return_tensors!r}"
            )
        return BatchFeature(data=data)

    def __call__(self, images: Any, **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, **kwargs)


__all__ = [
    "Phi3VImageProcessor",
    "hd_scale",
    "hd_transform",
    "hd_transform_size",
    "num_image_tokens",
]
