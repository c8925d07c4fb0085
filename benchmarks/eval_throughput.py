"""Evaluation throughput: batched generation vs one-by-one, and teacher-forced scoring.

All three run in the same process on the same tiny Phi-3-vision model and the same prepared
synthetic split:

- batched: `generate_predictions(batch_size=B)`, i.e. `vistune evaluate` (greedy, KV cache,
  left padding);
- one-by-one: the same call with batch_size=1, what a per-image loop does;
- teacher-forced (reference only): one forward pass with the true answer in the input and the
  argmax token at each answer position, how the reference recipe "scores" a model. It is
  fast but not an evaluation: the model never has to produce the answer on its own.

Usage: python benchmarks/eval_throughput.py [--rows 48] [--batch-size 16] [--max-new-tokens 40]
Prints a table and writes benchmarks/results/eval_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import torch
from rich.console import Console
from rich.table import Table


def teacher_forced_answers(vlm, images, questions, answers) -> list[str]:
    """Argmax of the logits at each answer position given the true prefix (reference style)."""
    batch = vlm.collate(images, questions, answers)
    batch = {k: v.to(vlm.model.device) if hasattr(v, "to") else v for k, v in batch.items()}
    labels = batch.pop("labels")
    with torch.inference_mode():
        logits = vlm.model(**batch).logits
    predicted = logits[:, :-1].argmax(-1)
    mask = labels[:, 1:] != -100
    tokenizer = getattr(vlm.processor, "tokenizer", vlm.processor)
    return [
        tokenizer.decode(predicted[i][mask[i]].tolist(), skip_special_tokens=True)
        for i in range(len(answers))
    ]


def timed(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from vistune.data.dataset import load_split, open_image
    from vistune.data.prepare import PrepareConfig, prepare_dataset
    from vistune.models.families import load_vlm

    from vistune.answer import DEFAULT_QUESTION, DEFAULT_TEMPLATE, format_answer
    from vistune.data.sample import generate_catalog
    from vistune.evaluation import generate_predictions

    with tempfile.TemporaryDirectory() as tmp:
        sample, prepared = Path(tmp) / "sample", Path(tmp) / "prepared"
        generate_catalog(sample, rows=max(200, args.rows * 3), seed=0, image_size=64)
        prepare_dataset(PrepareConfig(source=str(sample), out=prepared), show_progress=False)
        frame = load_split(prepared, "train").head(args.rows).reset_index(drop=True)
        vlm = load_vlm("tiny")
        vlm.model.eval()
        common = {
            "question": DEFAULT_QUESTION,
            "template": DEFAULT_TEMPLATE,
            "max_new_tokens": args.max_new_tokens,
        }
        generate_predictions(vlm, frame.head(2), prepared, batch_size=2, **common)  # warm-up
        t_batched, batched = timed(
            lambda: generate_predictions(
                vlm, frame, prepared, batch_size=args.batch_size, **common
            ),
            args.repeats,
        )
        t_single, single = timed(
            lambda: generate_predictions(vlm, frame, prepared, batch_size=1, **common), 1
        )
        images = [open_image(prepared, p) for p in frame["image"]]
        answers = [format_answer(r) for r in frame.to_dict("records")]

        def teacher_forced() -> list[str]:
            out: list[str] = []
            for start in range(0, len(images), args.batch_size):
                sl = slice(start, start + args.batch_size)
                out += teacher_forced_answers(
                    vlm, images[sl], [DEFAULT_QUESTION] * len(images[sl]), answers[sl]
                )
            return out

        t_teacher, _ = timed(teacher_forced, args.repeats)
        generated_tokens = sum(
            len(vlm.processor.tokenizer(text, add_special_tokens=False)["input_ids"])
            for text in batched["generated"]
        )

    n = len(frame)
    same = int((batched["generated"] == single["generated"]).sum())
    rows = [
        ("batched generation (evaluate)", args.batch_size, t_batched),
        ("one-by-one generation", 1, t_single),
        ("teacher-forced argmax (reference, not an eval)", args.batch_size, t_teacher),
    ]
    result = {
        "benchmark": "eval_throughput",
        "rows": n,
        "max_new_tokens": args.max_new_tokens,
        "generated_tokens_batched": generated_tokens,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "results": [
            {
                "method": name,
                "batch_size": bs,
                "seconds": round(t, 3),
                "samples_per_s": round(n / t, 2),
            }
            for name, bs, t in rows
        ],
        "batched_vs_one_by_one": round(t_single / t_batched, 2),
        "batched_answers_equal_one_by_one": f"{same}/{n}",
    }
    table = Table(
        title=f"eval throughput, tiny Phi-3-V, {n} rows, {args.max_new_tokens} new tokens"
    )
    for col in ("method", "batch", "seconds", "samples/s", "vs one-by-one"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for name, bs, t in rows:
        table.add_row(name, str(bs), f"{t:.2f}", f"{n / t:.1f}", f"{t_single / t:.1f}x")
    console = Console()
    console.print(table)
    console.print(f"batched answers identical to one-by-one: {same}/{n}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "eval_throughput.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
