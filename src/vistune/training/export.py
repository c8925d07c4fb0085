"""Export a run's model: a PEFT adapter folder, or full weights with LoRA merged in.

`--merge` writes one of two layouts:

- `official` (default): a drop-in replacement for the base model folder the run started
  from. The weights are the merged model's, under the official tensor names, as sharded
  safetensors; `config.json` is the base folder's own file (architectures, `model_type`,
  `auto_map`), with only the dtype updated; every other non-weight file of the base folder
  (processor, tokenizer, chat template, generation config, remote-code `.py` files, licence)
  is copied from it unchanged, never written by vistune. Serving engines (vLLM, SGLang) load it
  as they load the base folder.
- `vistune`: the self-contained layout `VisionLanguageModel.save` writes (vistune's
  processor and tokenizer files, no remote code), loadable by vistune and, after
  `import vistune`, by transformers' Auto classes.

In every layout no `auto_map` entry names a file the folder lacks (see `auto_map.py`). The
folder is written under a temporary name next to `--out` and renamed when complete, so a
failed export never leaves a half-written model.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from vistune.errors import ConfigError, ModelError
from vistune.models.base import VisionLanguageModel
from vistune.models.families import read_json
from vistune.outputs import atomic_output_dir
from vistune.training.auto_map import clean_auto_maps, missing_code

ExportKind = Literal["adapter", "merged", "full"]
ExportTarget = Literal["official", "vistune"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: Files of a model folder that hold weights (replaced by the export's own).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
#: Non-weight files copied from the base folder for the official layout.
COPIED_SUFFIXES = (".json", ".jinja", ".py", ".txt", ".model", ".tiktoken")
COPIED_PREFIXES = ("LICENSE", "NOTICE")
NOT_COPIED = ("config.json", "adapter_config.json", *WEIGHT_INDEXES)
#: The id vLLM's phi3v.py hard-codes for `<|image|>` (`_IMAGE_TOKEN_ID`).
VLLM_PHI3V_IMAGE_TOKEN_ID = 32044
DEFAULT_MAX_SHARD_SIZE = "5GB"


@dataclass
class ExportResult:
    kind: ExportKind
    out_dir: Path
    target: ExportTarget | None = None
    #: `file: key -> module.py` for each auto_map entry dropped because its code is absent.
    dropped_auto_map: list[str] = field(default_factory=list)
    #: What the folder can and cannot be loaded by, one sentence each.
    notes: list[str] = field(default_factory=list)


def find_final(run_dir: Path) -> Path:
    """`RUN_DIR/final`, or the folder itself when it already is an adapter/model folder."""
    run_dir = Path(run_dir)
    for candidate in (run_dir / "final", run_dir):
        if (candidate / "adapter_config.json").is_file() or (candidate / "config.json").is_file():
            return candidate
    raise ModelError(
        f"{run_dir}: no final/ model (adapter_config.json or config.json) found; "
        "is the training run finished? (an interrupted run continues with vistune train --resume)"
    )


def check_out_dir(out_dir: Path, source: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: exists and is not a folder; choose a new folder")
    if out_dir.resolve() == source.resolve():
        raise ConfigError(f"--out {out_dir}: is the model folder itself; choose another folder")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"--out {out_dir}: folder exists and is not empty; choose a new folder")


def strip_remote_code(model: torch.nn.Module) -> None:
    """Drop `auto_map` so the vistune-layout config never points at remote code."""
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "auto_map", None) is not None:
        config.auto_map = None
        if hasattr(config, "__dict__"):
            config.__dict__.pop("auto_map", None)


# -- the base folder a run started from ----------------------------------------------------
def base_folder_of(final: Path) -> Path:
    """The base model folder of a run's final model: the adapter's base, else the run's model.

    Raises ModelError naming `--base` when it cannot be found (a hub id that is not in the
    local cache, a moved folder).
    """
    from vistune.models.families import _resolve_folder

    source: str | None = None
    if (final / "adapter_config.json").is_file():
        source = read_json(final / "adapter_config.json").get("base_model_name_or_path")
    else:
        run_config = final.parent / "config.yaml"
        if run_config.is_file():
            import yaml

            model = (yaml.safe_load(run_config.read_text(encoding="utf-8")) or {}).get("model")
            source = str(final.parent / "base_model") if model == "tiny" else model
    if not source:
        raise ModelError(
            f"{final}: cannot tell which base model folder this run started from; pass "
            "--base BASE_MODEL_FOLDER"
        )
    try:
        folder = _resolve_folder(str(source), None)
    except ModelError as err:
        raise ModelError(f"{err}; or pass --base BASE_MODEL_FOLDER") from err
    if not (folder / "config.json").is_file():
        raise ModelError(f"base model folder {folder}: no config.json; pass --base FOLDER")
    return folder


def base_dtype(base: Path) -> str:
    """The dtype the base folder's config declares (`torch_dtype` or `dtype`), else float32."""
    config = read_json(base / "config.json")
    declared = config.get("torch_dtype") or config.get("dtype")
    return declared if declared in DTYPES else "float32"


# -- writing -----------------------------------------------------------------------------------
def load_merged(final: Path) -> VisionLanguageModel:
    """The run's model with any LoRA merged in, in float32 (merge before casting down)."""
    from vistune.models.families import load_vlm

    vlm = load_vlm(str(final), dtype=torch.float32)
    if hasattr(vlm.model, "merge_and_unload"):
        vlm.model = vlm.model.merge_and_unload()
    vlm.model.eval()
    return vlm


def write_official(
    vlm: VisionLanguageModel, base: Path, out: Path, *, dtype: str, max_shard_size: str
) -> None:
    """Merged weights under the official names + the base folder's own files, into `out`."""
    weights = out / ".weights"
    vlm.model.to(DTYPES[dtype]).save_pretrained(weights, max_shard_size=max_shard_size)
    for path in weights.iterdir():
        if path.suffix == ".safetensors" or path.name in WEIGHT_INDEXES:
            path.rename(out / path.name)
    shutil.rmtree(weights)
    for path in sorted(base.iterdir()):
        if not path.is_file() or path.name in NOT_COPIED or path.suffix in WEIGHT_SUFFIXES:
            continue
        if path.suffix in COPIED_SUFFIXES or path.name.startswith(COPIED_PREFIXES):
            shutil.copy2(path, out / path.name)
    config = read_json(base / "config.json")
    for key in ("torch_dtype", "dtype"):
        if key in config:
            config[key] = dtype
    if "torch_dtype" not in config and "dtype" not in config:
        config["torch_dtype"] = dtype
    (out / "config.json").write_text(
        json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def weight_names(folder: Path) -> set[str]:
    """Tensor names of a folder's safetensors files (headers only, no tensor is read)."""
    from safetensors import safe_open

    names: set[str] = set()
    for path in folder.glob("*.safetensors"):
        with safe_open(path, "pt") as handle:
            names.update(handle.keys())
    return names


def token_id(folder: Path, token: str) -> int | None:
    """The id `tokenizer.json` gives `token` (added tokens first, then the vocabulary)."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        return None
    data = read_json(path)
    for added in data.get("added_tokens", []):
        if added.get("content") == token:
            return int(added["id"])
    vocab = (data.get("model") or {}).get("vocab")
    if isinstance(vocab, dict) and token in vocab:
        return int(vocab[token])
    return None


def loadability(out: Path, base: Path | None) -> list[str]:
    """Sentences saying which loaders this folder works with, from the files it holds."""
    config = read_json(out / "config.json")
    model_type = config.get("model_type")
    notes = ["vistune (predict, evaluate, serve) loads it"]
    if model_type != "phi3_v":
        notes.append(
            f"model_type {model_type!r} is native to transformers: AutoModelForImageTextToText "
            "and AutoProcessor load it without remote code; serving engines load it as they "
            "load the base model (not verified here)"
        )
        return notes
    notes.append("transformers loads it with AutoModelForCausalLM after `import vistune`")
    processor_map: dict[str, Any] = {}
    for name in ("processor_config.json", "preprocessor_config.json"):
        if (out / name).is_file():
            processor_map.update(read_json(out / name).get("auto_map") or {})
    model_map = config.get("auto_map") or {}
    complete = (
        "AutoProcessor" in processor_map
        and "AutoModelForCausalLM" in model_map
        and not missing_code(out, {**processor_map, **model_map})
    )
    if complete:
        notes.append(
            "it carries the base folder's remote code (auto_map in config.json and "
            "preprocessor_config.json): `vllm serve DIR --trust-remote-code` and SGLang load it "
            "as they load the base folder (their documented requirements; not run here)"
        )
    elif base is None:
        notes.append(
            "vLLM and SGLang cannot load it: they build inputs with Microsoft's processor code "
            "(processing_phi3_v.py, trust_remote_code), which this vistune layout does not "
            "carry; export with --for official for them"
        )
    else:
        notes.append(
            f"vLLM and SGLang cannot load it: they build inputs with Microsoft's processor code "
            f"(processing_phi3_v.py named by an AutoProcessor auto_map, trust_remote_code), and "
            f"the base folder {base} has none; export again with --base pointing at a full "
            "download of microsoft/Phi-3-vision-128k-instruct or Phi-3.5-vision-instruct "
            "(hf download, .py files included)"
        )
    image_id = token_id(out, "<|image|>")
    configured = int(config.get("image_token_id", VLLM_PHI3V_IMAGE_TOKEN_ID))
    if image_id is not None and image_id != configured:
        raise ModelError(
            f"{out}: the tokenizer gives <|image|> id {image_id} but config.json uses "
            f"{configured}; the tokenizer files do not belong to this model"
        )
    if configured != VLLM_PHI3V_IMAGE_TOKEN_ID:
        notes.append(
            f"<|image|> is id {configured} here, but vLLM's phi3v hard-codes "
            f"{VLLM_PHI3V_IMAGE_TOKEN_ID}: vLLM cannot serve this model (a tiny/test model)"
        )
    return notes


def export_run(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    merge: bool = False,
    target: ExportTarget = "official",
    dtype: str | None = None,
    base: str | Path | None = None,
    max_shard_size: str = DEFAULT_MAX_SHARD_SIZE,
) -> ExportResult:
    """Write the run's final model to `out_dir` (adapter copy, merged weights or full copy).

    `dtype` defaults to the base folder's declared dtype for `official`, float32 otherwise.
    `base` overrides the base model folder the official layout copies its files from.
    """
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    if target not in ("official", "vistune"):
        raise ConfigError(f"--for {target!r}: choose official or vistune")
    final = find_final(Path(run_dir))
    out_dir = Path(out_dir)
    check_out_dir(out_dir, final)
    is_adapter = (final / "adapter_config.json").is_file()
    base_dir: Path | None = None
    if merge and target == "official":
        base_dir = Path(base) if base is not None else base_folder_of(final)
        if not (base_dir / "config.json").is_file():
            raise ModelError(f"--base {base_dir}: no config.json; point at the base model folder")
    # Written next to out_dir and renamed into place: a failed export leaves no half folder.
    with atomic_output_dir(out_dir, (), "model export") as staging:
        if not merge:
            shutil.copytree(final, staging, dirs_exist_ok=True)
            kind: ExportKind = "adapter" if is_adapter else "full"
        else:
            vlm = load_merged(final)
            kind = "merged" if is_adapter else "full"
            if base_dir is not None:
                write_official(
                    vlm,
                    base_dir,
                    staging,
                    dtype=dtype or base_dtype(base_dir),
                    max_shard_size=max_shard_size,
                )
            else:
                strip_remote_code(vlm.model)
                vlm.model.to(DTYPES[dtype or "float32"])
                vlm.save(staging)
        dropped = clean_auto_maps(staging)
        notes = loadability(staging, base_dir) if merge else []
        if base_dir is not None:
            notes += _weight_name_notes(staging, base_dir)
    return ExportResult(kind, out_dir, target if merge else None, dropped, notes)


def _weight_name_notes(out: Path, base: Path) -> list[str]:
    """Compare tensor names with the base folder's (a drop-in folder has the same names)."""
    ours, theirs = weight_names(out), weight_names(base)
    if not theirs:
        return [f"the base folder {base} holds no safetensors weights to compare names with"]
    if ours == theirs:
        return [f"its {len(ours)} tensor names are the base folder's"]
    missing, extra = sorted(theirs - ours), sorted(ours - theirs)
    return [
        f"tensor names differ from the base folder's: missing {missing[:5]}"
        f"{' ...' if len(missing) > 5 else ''}, extra {extra[:5]}{' ...' if len(extra) > 5 else ''}"
    ]
