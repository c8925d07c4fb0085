"""Training throughput: vistune's batches vs the reference recipe and the official collation.

Same tiny Phi-3-vision, same prepared synthetic catalog, same optimizer, same number of
samples per optimizer step, the same Hugging Face Trainer underneath; only the data path
differs:

- vistune: `CatalogDataset` + the family's collate (images decoded and preprocessed in
  DataLoader workers, dynamic padding, labels only on answer + end token), batch B.
- reference (a faithful re-implementation of the widely copied Burberry script): the prompt
  with `<|image_1|>` tokenized as plain text by the tokenizer alone (the image never reaches
  the model), left padding to 512 tokens, labels = input_ids (prompt and padding in the loss),
  batch 1 with B accumulation steps. Tokenization is done before training, as there.
- official (Phi-3-vision cookbook fine-tuning collation): the processor on one example at a
  time (its collator asserts batch size 1), prompt masked, batch 1 with B accumulation steps.

Each recipe runs in its own subprocess so peak RSS is its own. samples/s is measured over the
training loop only (Trainer's train_runtime) after the model is loaded. One torch thread by
default: on a small, shared CPU box two OpenMP threads spin against other load and make
every number noise. DataLoader workers default to 0 (the conservative choice: batch-1
recipes pay more per-batch IPC with workers, which would flatter vistune).

Usage: python benchmarks/train_throughput.py [--steps 60] [--batch-size 8] [--workers 0]
Prints a table and writes benchmarks/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RECIPES = ("vistune", "reference", "official")
REFERENCE_MAX_LENGTH = 512


def build_inputs(work: Path, rows: int) -> tuple[Path, Path]:
    """A prepared synthetic catalog and a tiny Phi-3-V whose tokenizer fits it."""
    from vistune.answer import DEFAULT_QUESTION, DEFAULT_TEMPLATE
    from vistune.data.prepare import PrepareConfig, prepare_dataset
    from vistune.data.sample import generate_catalog
    from vistune.models.tiny import build_tiny_phi3v
    from vistune.training.config import TrainConfig
    from vistune.training.run import tokenizer_corpus

    sample, prepared, model = work / "sample", work / "prepared", work / "model"
    generate_catalog(sample, rows=rows, seed=0, image_size=64, preset="simple")
    prepare_dataset(PrepareConfig(source=str(sample), out=prepared), show_progress=False)
    config = TrainConfig(data=prepared, model="tiny", output=work / "unused")
    corpus = tokenizer_corpus(config)
    assert DEFAULT_QUESTION in corpus and DEFAULT_TEMPLATE
    build_tiny_phi3v(model, seed=0, corpus=corpus)
    return prepared, model


def training_args(out: Path, batch: int, accumulation: int, steps: int, workers: int):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        max_steps=steps,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        optim="adamw_torch",
        adam_beta2=0.95,
        weight_decay=0.01,
        save_strategy="no",
        report_to="none",
        logging_steps=steps,
        remove_unused_columns=False,
        dataloader_num_workers=workers,
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )


def reference_rows(prepared: Path, tokenizer) -> list[dict]:
    """The reference script's preprocessing: text-only, left-padded to 512, labels = input_ids."""
    from vistune.answer import DEFAULT_QUESTION, format_answer
    from vistune.data.dataset import load_split

    tokenizer.padding_side = "left"
    rows = []
    for row in load_split(prepared, "train").to_dict("records"):
        text = f"<|user|>\n<|image_1|>\n{DEFAULT_QUESTION}<|end|>\n<|assistant|>\n"
        text += format_answer(row) + "<|end|>"
        encoded = tokenizer(
            text, padding="max_length", truncation=True, max_length=REFERENCE_MAX_LENGTH
        )
        rows.append(
            {
                "input_ids": encoded["input_ids"],
                "attention_mask": encoded["attention_mask"],
                "labels": list(encoded["input_ids"]),
                "answer_tokens": len(
                    tokenizer(format_answer(row), add_special_tokens=False)["input_ids"]
                ),
            }
        )
    return rows


class ReferenceCollator:
    def __call__(self, items: list[dict]) -> dict:
        import torch

        return {
            key: torch.tensor([item[key] for item in items])
            for key in ("input_ids", "attention_mask", "labels")
        }


def run_recipe(recipe: str, prepared: Path, model_dir: Path, args: argparse.Namespace) -> dict:
    import torch
    from transformers import Trainer

    from vistune.answer import DEFAULT_QUESTION, DEFAULT_TEMPLATE
    from vistune.models.families import load_vlm
    from vistune.training.data import CatalogDataset, VlmCollator
    from vistune.training.trainer import VistuneTrainer

    torch.set_num_threads(args.threads)
    vlm = load_vlm(str(model_dir))
    out = Path(tempfile.mkdtemp(prefix=f"bench-{recipe}-", dir=prepared.parent))
    dataset = CatalogDataset(
        prepared, "train", question=DEFAULT_QUESTION, template=DEFAULT_TEMPLATE
    )
    tokenizer = vlm.processor.tokenizer
    b, steps = args.batch_size, args.steps
    if recipe == "vistune":
        trainer = VistuneTrainer(
            model=vlm.model,
            args=training_args(out, b, 1, steps, args.workers),
            train_dataset=dataset,
            data_collator=VlmCollator(vlm.family, vlm.processor),
        )
    elif recipe == "official":
        trainer = Trainer(
            model=vlm.model,
            args=training_args(out, 1, b, steps, args.workers),
            train_dataset=dataset,
            data_collator=VlmCollator(vlm.family, vlm.processor),
        )
    else:
        rows = reference_rows(prepared, tokenizer)
        trainer = Trainer(
            model=vlm.model,
            args=training_args(out, 1, b, steps, 0),
            train_dataset=rows,
            data_collator=ReferenceCollator(),
        )
    # token accounting on the batches this recipe feeds (first 64 rows)
    sample = [dataset[i] for i in range(min(64, len(dataset)))]
    if recipe == "reference":
        loss_tokens = sum(len(r["labels"]) for r in rows[:64])
        answer_tokens = sum(r["answer_tokens"] for r in rows[:64])
        tokens = loss_tokens
    else:
        collate = VlmCollator(vlm.family, vlm.processor)
        size = b if recipe == "vistune" else 1
        tokens = loss_tokens = answer_tokens = 0
        for start in range(0, len(sample), size):
            batch = collate(sample[start : start + size])
            tokens += int(batch["input_ids"].numel())
            loss_tokens += int((batch["labels"] != -100).sum())
        answer_tokens = sum(
            len(t)
            for t in tokenizer([s["answer"] for s in sample], add_special_tokens=False)["input_ids"]
        )
    output = trainer.train()
    runtime = output.metrics["train_runtime"]
    return {
        "recipe": recipe,
        "per_device_batch": b if recipe == "vistune" else 1,
        "accumulation": 1 if recipe == "vistune" else b,
        "optimizer_steps": steps,
        "samples": steps * b,
        "seconds": round(runtime, 3),
        "samples_per_s": round(steps * b / runtime, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "tokens_per_sample": round(tokens / len(sample), 1),
        "loss_tokens_per_sample": round(loss_tokens / len(sample), 1),
        "answer_share_of_loss": round(min(answer_tokens / max(loss_tokens, 1), 1.0), 4),
        "final_loss": round(output.training_loss, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--rows", type=int, default=320)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--worker", choices=RECIPES, help=argparse.SUPPRESS)
    parser.add_argument("--prepared", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(run_recipe(args.worker, args.prepared, args.model, args)))
        return

    from rich.console import Console
    from rich.table import Table

    console = Console(width=110)
    with tempfile.TemporaryDirectory() as tmp:
        prepared, model = build_inputs(Path(tmp), args.rows)
        results = []
        for recipe in RECIPES:
            command = [
                sys.executable, __file__, "--worker", recipe, "--prepared", str(prepared),
                "--model", str(model), "--steps", str(args.steps),
                "--batch-size", str(args.batch_size), "--workers", str(args.workers),
                "--threads", str(args.threads),
            ]  # fmt: skip
            proc = subprocess.run(command, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise SystemExit(f"{recipe} failed:\n{proc.stderr[-3000:]}")
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))

    by = {r["recipe"]: r for r in results}
    speed = by["vistune"]["samples_per_s"]
    summary = {
        "benchmark": "train_throughput",
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "results": results,
        "vistune_vs_reference": round(speed / by["reference"]["samples_per_s"], 2),
        "vistune_vs_official": round(speed / by["official"]["samples_per_s"], 2),
        "targets": {"vs_reference": 3.0, "vs_official": 1.5},
    }
    table = Table(title=f"train throughput, tiny Phi-3-V, {args.steps} steps x {args.batch_size}")
    columns = ("recipe", "batch x acc", "samples/s", "vs vistune", "RSS MB",
               "tok/sample", "loss tok", "answer %")  # fmt: skip
    for col in columns:
        table.add_column(col, justify="left" if col == "recipe" else "right")
    for r in results:
        table.add_row(
            r["recipe"],
            f"{r['per_device_batch']} x {r['accumulation']}",
            f"{r['samples_per_s']:.1f}",
            f"{r['samples_per_s'] / speed:.2f}",
            f"{r['peak_rss_mb']:.0f}",
            f"{r['tokens_per_sample']:.0f}",
            f"{r['loss_tokens_per_sample']:.0f}",
            f"{100 * r['answer_share_of_loss']:.1f} %",
        )
    console.print(table)
    console.print(
        f"vistune vs reference: {summary['vistune_vs_reference']}x (target >= 3); "
        f"vs official batch-1: {summary['vistune_vs_official']}x (target >= 1.5)"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "train_throughput.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
