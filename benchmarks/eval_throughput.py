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
       [--single-rows 16] [--repeats 3]
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

import pandas as pd
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--single-rows", type=int, default=16, help="rows run one by one")
    parser.add_argument("--repeats", type=int, default=3)
    # One intra-op thread by default: on a shared CPU, spinning OpenMP threads of a tiny model
    # make timings swing by 10x with the machine's load; one thread keeps the ratios stable.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from vistune.answer import DEFAULT_QUESTION, DEFAULT_TEMPLATE, format_answer
    from vistune.data.dataset import load_split, open_image
    from vistune.data.prepare import PrepareConfig, prepare_dataset
    from vistune.data.sample import generate_catalog
    from vistune.evaluation import generate_predictions
    from vistune.models.families import load_vlm

    with tempfile.TemporaryDirectory() as tmp:
        sample, prepared = Path(tmp) / "sample", Path(tmp) / "prepared"
        generate_catalog(
            sample, rows=max(200, args.rows * 3), seed=0, image_size=64, preset="simple"
        )
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
        single_frame = frame.head(args.single_rows)
        images = [open_image(prepared, p) for p in frame["image"]]
        answers = [format_answer(r) for r in frame.to_dict("records")]

        def batched() -> pd.DataFrame:
            return generate_predictions(vlm, frame, prepared, batch_size=args.batch_size, **common)

        def one_by_one() -> pd.DataFrame:
            return generate_predictions(vlm, single_frame, prepared, batch_size=1, **common)

        def teacher_forced() -> list[str]:
            out: list[str] = []
            for start in range(0, len(images), args.batch_size):
                sl = slice(start, start + args.batch_size)
                out += teacher_forced_answers(
                    vlm, images[sl], [DEFAULT_QUESTION] * len(images[sl]), answers[sl]
                )
            return out

        # Interleaved repeats, best of each: on a shared machine the load changes over time,
        # and interleaving exposes every method to the same conditions.
        methods = {
            "batched": (batched, len(frame)),
            "single": (one_by_one, len(single_frame)),
            "teacher": (teacher_forced, len(frame)),
        }
        rate: dict[str, float] = {}
        outputs: dict[str, object] = {}
        for _ in range(args.repeats):
            for name, (fn, rows) in methods.items():
                start = time.perf_counter()
                outputs[name] = fn()
                rate[name] = max(rate.get(name, 0.0), rows / (time.perf_counter() - start))
        batched_out, single_out = outputs["batched"], outputs["single"]
        generated_tokens = sum(
            len(vlm.processor.tokenizer(text, add_special_tokens=False)["input_ids"])
            for text in batched_out["generated"]
        )

    n, n_single = len(frame), len(single_frame)
    same = int((batched_out["generated"].head(n_single) == single_out["generated"]).sum())
    rows = [
        ("batched generation (evaluate)", args.batch_size, n, rate["batched"]),
        ("one-by-one generation", 1, n_single, rate["single"]),
        ("teacher-forced argmax (reference, not an eval)", args.batch_size, n, rate["teacher"]),
    ]
    result = {
        "benchmark": "eval_throughput",
        "max_new_tokens": args.max_new_tokens,
        "generated_tokens_batched": generated_tokens,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "results": [
            {"method": name, "batch_size": bs, "rows": rows_, "samples_per_s": round(r, 3)}
            for name, bs, rows_, r in rows
        ],
        "batched_vs_one_by_one": round(rate["batched"] / rate["single"], 2),
        "batched_answers_equal_one_by_one": f"{same}/{n_single}",
    }
    table = Table(title=f"eval throughput, tiny Phi-3-V, {args.max_new_tokens} max new tokens")
    for col in ("method", "batch", "rows", "samples/s", "vs one-by-one"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for name, bs, rows_, r in rows:
        table.add_row(name, str(bs), str(rows_), f"{r:.2f}", f"{r / rate['single']:.1f}x")
    console = Console()
    console.print(table)
    console.print(f"batched answers identical to one-by-one: {same}/{n_single}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "eval_throughput.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
