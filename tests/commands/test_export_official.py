"""`vistune export --merge --for official`: a drop-in replacement of an official base folder.

The base is the tiny Phi-3-vision dressed as the hub folder of microsoft/Phi-3-vision-128k-
instruct: the same file names, stub remote-code files, `auto_map` in config.json,
preprocessor_config.json and tokenizer_config.json, the chat template inside
tokenizer_config.json, a licence. The checks are re-derived from the engines' own rules
(vLLM's phi3v.py `hf_to_vllm_mapper` prefixes and hard-coded `<|image|>`), not from the
export code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from vistune.cli import app
from vistune.training import TrainConfig, run_training

pytestmark = pytest.mark.slow

#: The official folder's remote-code files (microsoft/Phi-3-vision-128k-instruct).
CODE_FILES = (
    "configuration_phi3_v.py",
    "modeling_phi3_v.py",
    "image_embedding_phi3_v.py",
    "image_processing_phi3_v.py",
    "processing_phi3_v.py",
)
CONFIG_AUTO_MAP = {
    "AutoConfig": "configuration_phi3_v.Phi3VConfig",
    "AutoModelForCausalLM": "modeling_phi3_v.Phi3VForCausalLM",
}
PROCESSOR_AUTO_MAP = {
    "AutoProcessor": "processing_phi3_v.Phi3VProcessor",
    "AutoImageProcessor": "image_processing_phi3_v.Phi3VImageProcessor",
}
#: vLLM phi3v.py: hf_to_vllm_mapper.orig_to_new_prefix (checked in order, first match wins).
VLLM_PREFIXES = (
    "model.vision_embed_tokens.wte",
    "model.vision_embed_tokens.",
    "lm_head.",
    "model.",
)


def edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data, indent=2))


@pytest.fixture(scope="module")
def official_base(tiny_phi3v_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("official") / "Phi-3-vision-128k-instruct"
    shutil.copytree(tiny_phi3v_dir, base)
    (base / "vistune_tiny.json").unlink(missing_ok=True)
    for name in CODE_FILES:
        (base / name).write_text(f"# stub of Microsoft's {name}\n")
    edit_json(base / "config.json", auto_map=CONFIG_AUTO_MAP, torch_dtype="float32")
    edit_json(base / "preprocessor_config.json", auto_map=PROCESSOR_AUTO_MAP)
    template = (base / "chat_template.jinja").read_text()
    (base / "chat_template.jinja").unlink()
    edit_json(
        base / "tokenizer_config.json",
        chat_template=template,
        auto_map={"AutoProcessor": "processing_phi3_v.Phi3VProcessor"},
    )
    (base / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "<|endoftext|>", "unk_token": "<unk>"})
    )
    (base / "LICENSE").write_text("MIT License (stub)\n")
    (base / "README.md").write_text("# the base model's card\n")
    return base


@pytest.fixture(scope="module")
def lora_run(
    prepared_dir: Path, official_base: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    config = TrainConfig.from_dict(
        {
            "data": str(prepared_dir),
            "model": str(official_base),
            "output": str(tmp_path_factory.mktemp("export-official") / "run"),
            "method": "lora",
            "max_steps": 3,
            "learning_rate": 2e-2,
            "eval_steps": None,
            "report_to": ["none"],
            "dataloader_workers": 0,
        }
    )
    return run_training(config).run_dir


@pytest.fixture(scope="module")
def exported(lora_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("exports") / "merged"
    result = CliRunner().invoke(
        app, ["export", str(lora_run), "--out", str(out), "--merge", "--max-shard-size", "100KB"]
    )
    assert result.exit_code == 0, result.output
    return out, result.output


def keys_of(folder: Path) -> set[str]:
    names: set[str] = set()
    for path in folder.glob("*.safetensors"):
        with safe_open(path, "pt") as handle:
            names.update(handle.keys())
    return names


def test_run_final_names_no_absent_code(lora_run: Path) -> None:
    """The base's tokenizer auto_map does not survive into final/, which has no .py files."""
    final = lora_run / "final"
    assert not list(final.glob("*.py"))
    for name in ("tokenizer_config.json", "preprocessor_config.json", "adapter_config.json"):
        if (final / name).is_file():
            assert "auto_map" not in json.loads((final / name).read_text()), name


def test_file_set_is_the_base_folders(exported: tuple[Path, str], official_base: Path) -> None:
    out, output = exported
    files = {p.name for p in out.iterdir()}
    base_non_weights = {p.name for p in official_base.iterdir() if p.suffix != ".safetensors"} - {
        "README.md"
    }
    assert base_non_weights <= files
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) > 1 and shards[0].startswith("model-00001-of-")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    assert not {"adapter_config.json", "adapter_model.safetensors", "README.md"} & files
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    # copied byte for byte from the user's folder, never rewritten
    copied = ("preprocessor_config.json", "tokenizer_config.json", "tokenizer.json",
              "special_tokens_map.json", "generation_config.json", "LICENSE")  # fmt: skip
    for name in (*CODE_FILES, *copied):
        assert (out / name).read_bytes() == (official_base / name).read_bytes(), name
    said = " ".join(output.split())  # rich wraps long lines
    assert "official layout" in said and "vLLM cannot serve" in said  # the tiny image id


def test_config_is_the_base_config(exported: tuple[Path, str], official_base: Path) -> None:
    out, _ = exported
    config = json.loads((out / "config.json").read_text())
    base = json.loads((official_base / "config.json").read_text())
    assert config == base
    assert config["architectures"] == ["Phi3VForCausalLM"]
    assert config["model_type"] == "phi3_v"
    assert config["auto_map"] == CONFIG_AUTO_MAP
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert processor["auto_map"] == PROCESSOR_AUTO_MAP
    for auto_map in (config["auto_map"], processor["auto_map"]):
        for reference in auto_map.values():
            assert (out / (reference.rsplit(".", 1)[0] + ".py")).is_file(), reference


def test_weight_names_are_what_vllm_maps(exported: tuple[Path, str], official_base: Path) -> None:
    out, _ = exported
    names = keys_of(out)
    assert names == keys_of(official_base)
    assert not [n for n in names if "lora_" in n or "base_layer" in n]
    unmapped = [n for n in names if not n.startswith(VLLM_PREFIXES)]
    assert not unmapped
    groups = {prefix: [n for n in names if n.startswith(prefix)] for prefix in
              ("model.vision_embed_tokens.", "model.layers.", "lm_head.")}  # fmt: skip
    assert all(groups.values()), {k: len(v) for k, v in groups.items()}
    # Phi-3's fused projections, as vLLM's Phi3/Llama loader reads them
    assert "model.layers.0.self_attn.qkv_proj.weight" in names
    assert "model.layers.0.mlp.gate_up_proj.weight" in names


def test_image_token_is_the_configured_id(exported: tuple[Path, str]) -> None:
    out, _ = exported
    config = json.loads((out / "config.json").read_text())
    tokenizer = json.loads((out / "tokenizer.json").read_text())
    ids = {t["content"]: t["id"] for t in tokenizer["added_tokens"]}
    assert ids["<|image|>"] == config["image_token_id"]


def test_export_reloads_with_the_merged_logits(
    exported: tuple[Path, str], lora_run: Path, prepared_dir: Path
) -> None:
    from vistune.models.families import load_vlm
    from vistune.training.data import CatalogDataset, VlmCollator

    out, _ = exported

    def logits(source: Path) -> torch.Tensor:
        vlm = load_vlm(str(source))  # the run: base + adapter, merged on load
        items = CatalogDataset(
            prepared_dir, "validation", question="What is shown in this image?",
            template="Product: {title}, Category: {category3_code}, Full Price: {full_price:.2f}",
        )  # fmt: skip
        batch = VlmCollator(vlm.family, vlm.processor)([items[i] for i in range(3)])
        batch.pop("labels")
        vlm.model.eval()
        with torch.no_grad():
            return vlm.model(**batch).logits

    run_logits = logits(lora_run / "final")
    adapter = json.loads((lora_run / "final" / "adapter_config.json").read_text())
    base_logits = logits(Path(adapter["base_model_name_or_path"]))
    assert not torch.allclose(run_logits, base_logits, atol=1e-4)  # the adapter changed something
    torch.testing.assert_close(logits(out), run_logits, atol=1e-5, rtol=1e-5)


def test_vistune_layout_has_no_remote_code(lora_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "self-contained"
    result = CliRunner().invoke(
        app, ["export", str(lora_run), "--out", str(out), "--merge", "--for", "vistune"]
    )
    assert result.exit_code == 0, result.output
    assert not list(out.glob("*.py"))
    for path in out.glob("*.json"):
        assert "auto_map" not in json.loads(path.read_text()), path.name
    assert "export with --for official" in " ".join(result.output.split())


def test_base_without_code_drops_auto_map_and_says_so(
    lora_run: Path, official_base: Path, tmp_path: Path
) -> None:
    """A base snapshot without .py files (e.g. fetched with weights+json only)."""
    bare = tmp_path / "bare-base"
    shutil.copytree(official_base, bare, ignore=shutil.ignore_patterns("*.py"))
    out = tmp_path / "merged"
    args = ["export", str(lora_run), "--out", str(out), "--merge", "--base", str(bare)]
    result = CliRunner().invoke(app, [*args, "--dtype", "bfloat16"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    with safe_open(next(out.glob("*.safetensors")), "pt") as handle:
        assert handle.get_tensor("lm_head.weight").dtype == torch.bfloat16
    for name in ("config.json", "preprocessor_config.json", "tokenizer_config.json"):
        assert "auto_map" not in json.loads((out / name).read_text()), name
    assert "dropped auto_map entry" in result.output
    assert "cannot load it" in " ".join(result.output.split())
