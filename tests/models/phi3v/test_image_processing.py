"""Phi3VImageProcessor: token counts, HD transform geometry, padding and crop layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vistune.models.phi3v.image_processing_phi3v import (
    Phi3VImageProcessor,
    hd_transform,
    hd_transform_size,
    num_image_tokens,
)

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


# (width, height, num_crops) -> (padded h, padded w, tokens), worked out by hand with
# c = 336, t = 144: scale = max s with s * ceil(s / ratio) <= num_crops, ratio = long/short.
HAND_CASES = [
    ((1000, 1000, 16), (1344, 1344, 2509)),  # square: s=4, 4x4 crops
    ((1000, 1000, 4), (672, 672, 757)),  # square: s=2
    ((1000, 1000, 1), (336, 336, 313)),  # square: s=1 -> (1+1)*144 + 1 + 2*12
    ((400, 1200, 16), (2016, 672, 1957)),  # tall 1:3 -> s=6 on the long side, 6x2 crops
    ((1200, 400, 16), (672, 2016, 1909)),  # wide 3:1 -> 2x6 crops: 13*144 + 1 + 3*12
    ((1200, 400, 4), (336, 1008, 601)),  # wide 3:1 at 4 crops: s=3, 1x3
    ((1200, 400, 1), (336, 336, 313)),  # 336 x 112 padded to 336
    ((10, 10, 16), (1344, 1344, 2509)),  # tiny image is upscaled
    ((4000, 3000, 16), (1008, 1344, 1921)),  # huge 4:3 -> s=4, 1344 x 1008, 3x4 crops
    ((1, 5000, 16), (5376, 336, 2653)),  # extreme strip: 16 crops in one column
]


@pytest.mark.parametrize(("case", "expected"), HAND_CASES)
def test_token_count_and_hd_size_match_hand_computed(case, expected):
    width, height, crops = case
    exp_h, exp_w, exp_tokens = expected
    assert hd_transform_size(width, height, crops, 336) == (exp_h, exp_w)
    assert num_image_tokens(exp_h, exp_w, 336, 144) == exp_tokens
    processor = Phi3VImageProcessor(num_crops=crops)
    assert processor.num_tokens_for(Image.new("RGB", (width, height))) == exp_tokens


def test_token_formula_documented_values():
    assert num_image_tokens(1344, 1344, 336, 144) == 2509
    assert num_image_tokens(672, 672, 336, 144) == 757
    # tiny geometry: 32-px crops of 8-px patches -> 2x2 merged -> 4 tokens per crop
    assert num_image_tokens(64, 32, 32, 4) == (2 * 1 + 1) * 4 + 1 + 3 * 2
    with pytest.raises(ValueError, match="square"):
        num_image_tokens(336, 336, 336, 150)


def test_processor_outputs_official_shapes_for_a_mixed_batch():
    processor = Phi3VImageProcessor(num_crops=16)
    images = [Image.new("RGB", (1000, 1000)), Image.new("RGB", (400, 1200))]
    out = processor(images)
    assert out["pixel_values"].shape == (2, 17, 3, 336, 336)
    assert out["pixel_values"].dtype == torch.float32
    assert out["image_sizes"].tolist() == [[1344, 1344], [2016, 672]]
    assert out["image_sizes"].dtype == torch.long
    assert out["num_img_tokens"] == [2509, 1957]
    # 6x2 = 12 crops + global = 13 used slots; the rest are zero padding
    assert out["pixel_values"][1, 13:].abs().sum() == 0
    assert out["pixel_values"][1, 12].abs().sum() > 0


def test_white_padding_is_centred_and_transposed_for_tall_images():
    # 50x20 at crop 16, 4 crops: ratio 2.5 -> s=2 -> 32 x int(32/2.5)=12, padded to 16 (2 + 2)
    red = Image.new("RGB", (50, 20), (255, 0, 0))
    hd = np.asarray(hd_transform(red, num_crops=4, crop_size=16))
    assert hd.shape == (16, 32, 3)
    assert (hd[:2] == 255).all() and (hd[14:] == 255).all()
    assert (hd[2:14] == [255, 0, 0]).all()
    tall = np.asarray(hd_transform(red.transpose(Image.Transpose.TRANSPOSE), 4, 16))
    assert tall.shape == (32, 16, 3)
    assert (tall[:, :2] == 255).all() and (tall[:, 14:] == 255).all()
    assert (tall[:, 2:14] == [255, 0, 0]).all()


def test_crops_are_row_major_and_normalised_like_clip():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(32, 48, 3), dtype=np.uint8)  # exactly 2 x 3 crops of 16
    image = Image.fromarray(array)
    out = Phi3VImageProcessor(num_crops=6, num_img_tokens=4, crop_size=16)(image)
    assert out["image_sizes"].tolist() == [[32, 48]]
    pixels = out["pixel_values"][0]
    assert pixels.shape == (7, 3, 16, 16)
    expected = (array.astype(np.float32) / 255.0 - CLIP_MEAN) / CLIP_STD  # H, W, C
    for k, (row, col) in enumerate([(r, c) for r in range(2) for c in range(3)]):
        crop = expected[row * 16 : (row + 1) * 16, col * 16 : (col + 1) * 16].transpose(2, 0, 1)
        np.testing.assert_allclose(pixels[1 + k].numpy(), crop, atol=1e-5)
    # global view: a 16x16 bicubic summary of the whole image, close to its mean colour
    np.testing.assert_allclose(
        pixels[0].mean(dim=(1, 2)).numpy(), expected.mean(axis=(0, 1)), atol=0.05
    )


def test_transparent_pixels_become_white_and_grey_becomes_rgb():
    rgba = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    out = Phi3VImageProcessor(num_crops=1, num_img_tokens=4, crop_size=16)(rgba)
    white = (1.0 - CLIP_MEAN) / CLIP_STD
    np.testing.assert_allclose(out["pixel_values"][0, 1].mean(dim=(1, 2)).numpy(), white, atol=1e-5)
    grey = Image.new("L", (16, 16), 0)
    out = Phi3VImageProcessor(num_crops=1, num_img_tokens=4, crop_size=16)(grey)
    assert out["pixel_values"].shape == (1, 2, 3, 16, 16)


def test_official_config_loads_and_saves_without_auto_map(tmp_path):
    official = {
        "auto_map": {
            "AutoProcessor": "microsoft/Phi-3-vision-128k-instruct--processing_phi3_v."
            "Phi3VProcessor",
            "AutoImageProcessor": "microsoft/Phi-3-vision-128k-instruct--image_processing_phi3_v."
            "Phi3VImageProcessor",
        },
        "do_convert_rgb": True,
        "image_mean": CLIP_MEAN.tolist(),
        "image_processor_type": "Phi3VImageProcessor",
        "image_std": CLIP_STD.tolist(),
        "num_crops": 16,
        "num_img_tokens": 144,
        "processor_class": "Phi3VProcessor",
    }
    import json

    (tmp_path / "preprocessor_config.json").write_text(json.dumps(official))
    processor = Phi3VImageProcessor.from_pretrained(tmp_path)
    assert (processor.num_crops, processor.num_img_tokens, processor.crop_size) == (16, 144, 336)
    saved = tmp_path / "saved"
    processor.save_pretrained(saved)
    written = json.loads((saved / "preprocessor_config.json").read_text())
    assert "auto_map" not in written
    assert written["num_crops"] == 16 and written["image_processor_type"] == "Phi3VImageProcessor"
    assert written["processor_class"] == "Phi3VProcessor"
    assert Phi3VImageProcessor.from_pretrained(saved).to_dict() == processor.to_dict()


def test_num_crops_override_and_bad_input():
    processor = Phi3VImageProcessor(num_crops=16)
    out = processor(Image.new("RGB", (1000, 1000)), num_crops=4)
    assert out["pixel_values"].shape[1] == 5 and out["num_img_tokens"] == [757]
    from vistune.errors import ImageError

    with pytest.raises(ImageError, match="PIL"):
        processor(["not an image"])
