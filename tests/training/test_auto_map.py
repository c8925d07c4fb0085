"""`auto_map` entries keep only code the folder holds (exports and run/final)."""

from __future__ import annotations

import json
from pathlib import Path

from vistune.training.auto_map import clean_auto_maps, module_file

#: How transformers writes an auto_map entry once it loaded the code from a hub repository.
HUB_PREFIX = "microsoft/Phi-3-vision-128k-instruct--"


def write(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2))


def test_module_file_of_plain_hub_prefixed_and_dotted_references() -> None:
    assert module_file("processing_phi3_v.Phi3VProcessor") == "processing_phi3_v.py"
    assert (
        module_file("microsoft/Phi-3.5-vision-instruct--modeling_phi3_v.Phi3VForCausalLM")
        == "modeling_phi3_v.py"
    )
    assert module_file("pkg.tokenization.MyTokenizer") == "pkg/tokenization.py"


def test_entries_without_their_file_are_dropped_and_reported(tmp_path: Path) -> None:
    (tmp_path / "modeling_phi3_v.py").write_text("# code\n")
    (tmp_path / "configuration_phi3_v.py").write_text("# code\n")
    write(
        tmp_path / "config.json",
        {
            "model_type": "phi3_v",
            "auto_map": {
                "AutoConfig": f"{HUB_PREFIX}configuration_phi3_v.Phi3VConfig",
                "AutoModelForCausalLM": "modeling_phi3_v.Phi3VForCausalLM",
            },
        },
    )
    write(
        tmp_path / "tokenizer_config.json",
        {
            "tokenizer_class": "LlamaTokenizer",
            "auto_map": {
                "AutoTokenizer": [None, "tokenization_x.XTokenizerFast"],
                "AutoProcessor": "processing_phi3_v.Phi3VProcessor",
            },
        },
    )
    write(tmp_path / "preprocessor_config.json", {"num_crops": 4})

    dropped = clean_auto_maps(tmp_path)

    assert sorted(dropped) == [
        "tokenizer_config.json: AutoProcessor -> processing_phi3_v.py",
        "tokenizer_config.json: AutoTokenizer -> tokenization_x.py",
    ]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {  # kept, hub prefix removed: it names this folder's files
        "AutoConfig": "configuration_phi3_v.Phi3VConfig",
        "AutoModelForCausalLM": "modeling_phi3_v.Phi3VForCausalLM",
    }
    tokenizer = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert "auto_map" not in tokenizer and tokenizer["tokenizer_class"] == "LlamaTokenizer"
    assert json.loads((tmp_path / "preprocessor_config.json").read_text()) == {"num_crops": 4}


def test_a_clean_folder_is_not_rewritten(tmp_path: Path) -> None:
    (tmp_path / "processing_phi3_v.py").write_text("# code\n")
    text = '{"auto_map": {"AutoProcessor": "processing_phi3_v.Phi3VProcessor"}}'
    (tmp_path / "preprocessor_config.json").write_text(text)
    assert clean_auto_maps(tmp_path) == []
    assert (tmp_path / "preprocessor_config.json").read_text() == text  # byte for byte
