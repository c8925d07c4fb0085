"""Peak accelerator memory of a training step, estimated before training starts.

What is held at the peak: weights (every parameter and buffer as loaded: vistune loads LoRA
and full fine-tuning in fp32 and trains under bf16/fp16 autocast; QLoRA holds the language
model in 4 bits), AdamW's two states per trainable parameter, the batch's pixel values, and
the larger of two phases:

- start of the backward pass: the activations, `layer` values per token per hidden unit for
  each language-model layer (with gradient checkpointing `checkpointed_layer` per layer plus
  one layer's full set, recomputed), `base` values per token per hidden unit outside the
  layers (embeddings, image projection, final norm), `head` values per loss token per
  vocabulary entry (logits, log-probabilities and their gradient: vistune computes logits
  for the labelled positions only), under bf16/fp16 autocast the half-precision copies of
  the fp32 linear weights that autocast saves for the backward pass (every layer's, or only
  the recomputed one's under checkpointing), plus the first gradients (all of LoRA's; the
  LM head's under full fine-tuning);
- end of the backward pass and the optimizer step: every gradient, plus under full
  fine-tuning the `base` activations the embedding's backward still reads and `transient`
  times the largest trainable tensor (the embedding's dense gradient, AdamW's temporaries).

Activations scale with the batch, so the largest batch that fits follows from the same sum.
The coefficients are fitted by `benchmarks/full_size.py` (`memory.fit_coefficients`) on
Phi-3-vision at full width on CPU in fp32, and copied here; `tests/training/test_memory.py`
checks them against that file and checks the estimate against steps measured at a
different, small geometry, in fp32 and under bf16 autocast. Activations under autocast take
`HALF_PRECISION_ACTIVATION_SHARE` of their fp32 bytes, measured on CPU autocast (no GPU was
lent when the coefficients were fitted; CUDA autocast casts the same op classes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from vistune.errors import ConfigError

__all__ = [
    "COEFFICIENTS",
    "Coefficients",
    "MemoryEstimate",
    "MemoryPlan",
    "check_fits",
    "coefficients_from_fit",
    "estimate_peak",
    "estimate_record",
    "fit_coefficients",
    "largest_batch",
    "linear_weight_bytes",
    "plan_for_model",
    "plan_for_phi3v_config",
    "plan_for_probe_spec",
    "plan_for_training",
    "plan_from_probe",
    "render_estimate",
    "visible_accelerator",
]

GIB = 2**30
#: Share of the device's memory a step may plan to use: the rest is the CUDA context,
#: allocator fragmentation and the temporaries of kernels this estimate does not see.
USABLE_SHARE = 0.9
#: 4-bit NF4 with double quantisation: half a byte per weight plus the block constants.
QLORA_BYTES_PER_WEIGHT = 0.5 + 1 / 64 + 4 / (64 * 256)
#: LM head and loss per loss token per vocabulary entry, in 4-byte values: the logits, their
#: fp32 log-probabilities and the logits' gradient, plus one temporary. Counted, not fitted:
#: with 64 loss tokens per batch the head is 30 MB, below what the fit can resolve.
HEAD_VALUES = 4.0
#: Bytes per activation value under bf16/fp16 autocast over fp32 weights, as a share of
#: fp32: the residual stream, norms and softmax statistics stay fp32. Measured: the tensors
#: a LoRA step saves for backward hold 38.8 MiB under bf16 autocast vs 58.9 MiB in fp32
#: (0.66; small geometry, CPU autocast, `saved_tensors_hooks`).
HALF_PRECISION_ACTIVATION_SHARE = 0.66
#: Tokens of vistune's answer ("Product: ..., Category: ..., Full Price: ...<|end|>") per
#: sample, for plans made without a real batch.
ANSWER_TOKENS = 32


@dataclass(frozen=True)
class Coefficients:
    """Fitted sizes, in 4-byte values (see module docstring).

    layer: per language-model layer, per token per hidden unit, held from forward to backward.
    checkpointed_layer: the same under gradient checkpointing.
    base: per token per hidden unit, the activations outside the layers.
    transient: full fine-tuning's end-of-backward and optimizer-step temporaries, in units
        of the largest trainable tensor.
    head: per loss token per vocabulary entry (`HEAD_VALUES`).
    """

    layer: float
    checkpointed_layer: float
    base: float
    transient: float
    head: float = HEAD_VALUES
    source: str = ""


#: benchmarks/results/full_size.json ("coefficients"): Phi-3-vision at full width, fp32,
#: CPU. Refit by running the benchmark and copying its "coefficients" block here.
COEFFICIENTS = Coefficients(
    layer=25.3103,
    checkpointed_layer=0.984783,
    base=8.95668,
    transient=1.37724,
    source=(
        "benchmarks/full_size.py on CPU, fp32, batch 2, 4 and 16 crops: LoRA and full at 0, 1 "
        "and 2 layers, with and without gradient checkpointing (24 steps)"
    ),
)


@dataclass(frozen=True)
class MemoryPlan:
    """What the estimate needs to know about one training step."""

    weight_bytes: float
    trainable_bytes: float
    num_layers: int
    hidden_size: int
    vocab_size: int
    tokens_per_sample: int
    batch_size: int
    method: str
    activation_bytes: float = 4.0  # 4 x HALF_PRECISION_ACTIVATION_SHARE under autocast
    gradient_checkpointing: bool = False
    pixel_bytes_per_sample: float = 0.0
    optimizer_states: int = 2  # AdamW: exp_avg and exp_avg_sq
    loss_tokens_per_sample: int = ANSWER_TOKENS
    largest_trainable_bytes: float = 0.0
    # Under autocast every fp32 linear weight is cast to half precision for its matmul and
    # that copy is saved for the backward pass (bytes per decoder layer, and elsewhere).
    cast_copy_bytes_per_layer: float = 0.0
    cast_copy_bytes_other: float = 0.0


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak bytes by part. The peak is whichever phase is larger: the start of the backward
    pass (activations held, first gradients) or its end and the optimizer step (every
    gradient); weights, AdamW states and the batch's pixels are held in both."""

    parts: dict[str, float] = field(default_factory=dict)
    backward_phase: float = 0.0
    step_phase: float = 0.0

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    @property
    def phase(self) -> str:
        return "backward" if self.backward_phase >= self.step_phase else "optimizer step"


def estimate_peak(plan: MemoryPlan, coefficients: Coefficients = COEFFICIENTS) -> MemoryEstimate:
    """Peak bytes of one steady-state training step, by part."""
    tokens = plan.tokens_per_sample * plan.batch_size
    per_value = tokens * plan.hidden_size * plan.activation_bytes
    one_layer = coefficients.layer * per_value
    base = coefficients.base * per_value
    # the loss upcasts the logits to fp32 whatever the autocast dtype
    head = coefficients.head * plan.loss_tokens_per_sample * plan.batch_size * plan.vocab_size * 4
    if plan.gradient_checkpointing:
        # each layer keeps its input; one layer's full set is live while it is recomputed
        recomputed = one_layer if plan.num_layers else 0.0
        layers = plan.num_layers * coefficients.checkpointed_layer * per_value + recomputed
    else:
        layers = plan.num_layers * one_layer
    # cast copies are saved per layer; under checkpointing only the recomputed layer's
    copies = plan.cast_copy_bytes_other + plan.cast_copy_bytes_per_layer * (
        min(plan.num_layers, 1) if plan.gradient_checkpointing else plan.num_layers
    )
    activations = layers + base + head + copies
    full = plan.method == "full"
    # LoRA's few gradients sit next to all activations; full fine-tuning's appear as the
    # backward pass frees activations, starting with the LM head's.
    first_gradients = plan.largest_trainable_bytes if full else plan.trainable_bytes
    backward = activations + first_gradients
    extra = (base + coefficients.transient * plan.largest_trainable_bytes) if full else 0.0
    step = plan.trainable_bytes + extra
    parts = {
        "weights": plan.weight_bytes,
        "optimizer": plan.optimizer_states * plan.trainable_bytes,
        "inputs": plan.pixel_bytes_per_sample * plan.batch_size,
    }
    if backward >= step:
        parts["activations"] = activations
        parts["gradients"] = first_gradients
    else:
        parts["gradients"] = plan.trainable_bytes
        if extra:
            parts["activations and temporaries"] = extra
    return MemoryEstimate(parts, backward_phase=backward, step_phase=step)


def largest_batch(
    plan: MemoryPlan, device_bytes: float, coefficients: Coefficients = COEFFICIENTS
) -> int:
    """The largest per-device batch whose estimate fits `USABLE_SHARE` of the device (0: none)."""
    usable = USABLE_SHARE * device_bytes

    def fits(batch: int) -> bool:
        return estimate_peak(_with_batch(plan, batch), coefficients).total <= usable

    if not fits(1):
        return 0
    low, high = 1, 2
    while fits(high) and high < 1 << 20:
        low, high = high, high * 2
    while high - low > 1:  # fits(low), not fits(high)
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def _with_batch(plan: MemoryPlan, batch_size: int) -> MemoryPlan:
    from dataclasses import replace

    return replace(plan, batch_size=batch_size)


def fixes(plan: MemoryPlan, device_bytes: float, coefficients: Coefficients) -> list[str]:
    """Changes that bring the estimate under the device, cheapest first, each with its figure."""
    from dataclasses import replace

    out = []
    best = largest_batch(plan, device_bytes, coefficients)
    if 0 < best < plan.batch_size:
        out.append(f"per_device_batch_size={best} (raise gradient_accumulation_steps to keep it)")
    if not plan.gradient_checkpointing:
        ckpt = estimate_peak(replace(plan, gradient_checkpointing=True), coefficients).total
        out.append(f"gradient_checkpointing=true ({ckpt / GIB:.1f} GiB)")
    if plan.method == "full":
        out.append("method=lora (trains adapters: no full-size gradients or AdamW states)")
    if plan.method == "lora":
        out.append("method=qlora (4-bit language model)")
    out.append("a lower num_crops (fewer image tokens per sample)")
    return out


def check_fits(
    plan: MemoryPlan,
    device_bytes: float | None,
    force: bool = False,
    coefficients: Coefficients = COEFFICIENTS,
) -> None:
    """Refuse (ConfigError naming the fixes) when the estimate exceeds the device."""
    if device_bytes is None or force:
        return
    total = estimate_peak(plan, coefficients).total
    if total <= USABLE_SHARE * device_bytes:
        return
    raise ConfigError(
        f"estimated peak {total / GIB:.1f} GiB exceeds {USABLE_SHARE:.0%} of the GPU's "
        f"{device_bytes / GIB:.1f} GiB; try "
        + "; or ".join(fixes(plan, device_bytes, coefficients))
        + "; or pass --force to try anyway"
    )


def render_estimate(
    plan: MemoryPlan, device_bytes: float | None, device_name: str | None = None
) -> str:
    """The lines `vistune train` prints under its knobs."""
    estimate = estimate_peak(plan)
    parts = ", ".join(f"{k} {v / GIB:.1f}" for k, v in estimate.parts.items())
    lines = [
        f"memory estimate  {estimate.total / GIB:.1f} GiB peak per device "
        f"(method {plan.method}, {'fp32' if plan.activation_bytes == 4 else 'autocast'} "
        f"activations, batch "
        f"{plan.batch_size}, {plan.tokens_per_sample} tokens/sample, gradient checkpointing "
        f"{'on' if plan.gradient_checkpointing else 'off'}; peak in the {estimate.phase}; "
        f"GiB: {parts})"
    ]
    if device_bytes is None:
        lines.append(
            "                 no accelerator visible: nothing to check the estimate against"
        )
    else:
        best = largest_batch(plan, device_bytes)
        lines.append(
            f"                 {device_name or 'GPU'} {device_bytes / GIB:.1f} GiB: largest "
            f"per-device batch that fits {best}" + ("" if best else " (none: see the fixes below)")
        )
    return "\n".join(lines)


# -- plans ------------------------------------------------------------------------------------
def _half_precision(precision: str) -> bool:
    return precision in ("bf16", "fp16")


def _activation_bytes(precision: str) -> float:
    return 4 * HALF_PRECISION_ACTIVATION_SHARE if _half_precision(precision) else 4.0


def linear_weight_bytes(model: Any, vision_prefixes: tuple[str, ...]) -> tuple[float, float]:
    """(bytes in decoder layers, bytes elsewhere) of the fp32 linear weights the language
    side multiplies with: what autocast casts and saves. The frozen vision tower runs
    without autograd, so it saves nothing. Names may carry a PEFT prefix."""
    import re

    import torch

    in_layers = other = 0.0
    vision = tuple(p.strip(".") for p in vision_prefixes)
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(module, torch.nn.Linear) or weight is None:
            continue
        if weight.dtype != torch.float32 or any(v in name for v in vision):
            continue
        size = weight.numel() * 4
        if re.search(r"\.layers\.\d+\.", name + "."):
            in_layers += size
        else:
            other += size
    return in_layers, other


def _cast_copies(
    precision: str, linear_bytes: tuple[float, float], num_layers: int
) -> dict[str, float]:
    """MemoryPlan fields for autocast's half-precision weight copies (none in fp32)."""
    if not _half_precision(precision):
        return {}
    in_layers, other = linear_bytes
    return {
        "cast_copy_bytes_per_layer": in_layers / 2 / max(num_layers, 1),
        "cast_copy_bytes_other": other / 2,
    }


def _text_config(config: Any) -> Any:
    get_text = getattr(config, "get_text_config", None)
    return get_text() if callable(get_text) else config


def plan_for_model(
    model: Any,
    *,
    method: str,
    precision: str,
    batch_size: int,
    tokens_per_sample: int,
    gradient_checkpointing: bool,
    pixel_bytes_per_sample: float = 0.0,
    loss_tokens_per_sample: int = ANSWER_TOKENS,
    vision_prefixes: tuple[str, ...] = (),
) -> MemoryPlan:
    """A plan from a loaded, prepared model: its parameter bytes are counted, not assumed."""
    params = list(model.parameters())
    buffers = list(model.buffers())
    text = _text_config(model.config)
    trainable = [p.numel() * p.element_size() for p in params if p.requires_grad]
    copies = _cast_copies(
        precision, linear_weight_bytes(model, vision_prefixes), text.num_hidden_layers
    )
    return MemoryPlan(
        **copies,
        weight_bytes=sum(t.numel() * t.element_size() for t in params + buffers),
        trainable_bytes=sum(trainable),
        largest_trainable_bytes=max(trainable, default=0),
        loss_tokens_per_sample=loss_tokens_per_sample,
        num_layers=text.num_hidden_layers,
        hidden_size=text.hidden_size,
        vocab_size=text.vocab_size,
        tokens_per_sample=tokens_per_sample,
        batch_size=batch_size,
        method=method,
        activation_bytes=_activation_bytes(precision),
        gradient_checkpointing=gradient_checkpointing,
        pixel_bytes_per_sample=pixel_bytes_per_sample,
    )


def _phi3v_parameter_bytes(
    config: Any, method: str, lora_rank: int
) -> tuple[float, float, float, tuple[float, float]]:
    """(weight, trainable, largest trainable tensor, `linear_weight_bytes`) bytes of vistune's
    setup for `method`, counted on the meta device (no memory): fp32 weights for lora/full,
    NF4 language-model linears for qlora; vision tower frozen; projector trained; LoRA on the
    family's targets."""
    import torch

    from vistune.models.families import Phi3VFamily
    from vistune.models.phi3v import Phi3VForCausalLM
    from vistune.training.model import has_prefix, top_modules

    family = Phi3VFamily
    with torch.device("meta"):
        model = Phi3VForCausalLM(config)
    vision, projector = family.vision_tower_prefixes, family.projector_prefixes
    projector_modules = set(top_modules(model, projector)[0])
    adapters = 0.0  # LoRA A and B in fp32: they are parameters and trained
    largest = 0.0
    targets = set()
    for name, module in model.named_modules():
        if (
            isinstance(module, torch.nn.Linear)
            and name.startswith("model.layers.")
            and name.split(".")[-1] in family.default_lora_targets
        ):
            targets.add(name + ".weight")
            if method in ("lora", "qlora"):
                adapters += 4 * lora_rank * (module.in_features + module.out_features)
                largest = max(largest, 4 * lora_rank * max(module.in_features, module.out_features))
    weights, trainable = adapters, adapters
    for name, param in model.named_parameters():
        if method == "qlora" and name in targets:
            weights += param.numel() * QLORA_BYTES_PER_WEIGHT
        else:
            weights += param.numel() * (2 if method == "qlora" else 4)
        if method == "full":
            if not has_prefix(name, vision):
                trainable += 4 * param.numel()
                largest = max(largest, 4 * param.numel())
        elif has_prefix(name, projector) and name.rsplit(".", 1)[0] in projector_modules:
            # PEFT's modules_to_save trains a copy and keeps the original; bare parameters
            # (the separators) stay frozen under LoRA.
            trainable += 4 * param.numel()
            weights += 4 * param.numel()
            largest = max(largest, 4 * param.numel())
    linear_bytes = linear_weight_bytes(model, family.vision_tower_prefixes)
    return weights, trainable, largest, linear_bytes


def plan_for_phi3v_config(
    config: dict[str, Any],
    *,
    method: str,
    precision: str,
    num_crops: int,
    batch_size: int,
    gradient_checkpointing: bool,
    text_tokens: int = 64,
    num_layers: int | None = None,
    lora_rank: int = 16,
    answer_tokens: int = ANSWER_TOKENS,
) -> MemoryPlan:
    """A plan for a Phi-3-vision config file (no weights needed), one square photo per sample."""
    from vistune.models.phi3v import Phi3VConfig
    from vistune.training.memory_probe import image_token_count

    overrides = {} if num_layers is None else {"num_hidden_layers": num_layers}
    cfg = Phi3VConfig.from_dict({**config, **overrides})
    grid = max(1, math.isqrt(num_crops))
    weights, trainable, largest, linear_bytes = _phi3v_parameter_bytes(cfg, method, lora_rank)
    crop = cfg.crop_size
    # QLoRA's 4-bit weights are dequantised per matmul and not kept
    copies = (
        {} if method == "qlora" else _cast_copies(precision, linear_bytes, cfg.num_hidden_layers)
    )
    return MemoryPlan(
        **copies,
        weight_bytes=weights,
        trainable_bytes=trainable,
        largest_trainable_bytes=largest,
        loss_tokens_per_sample=answer_tokens,
        num_layers=cfg.num_hidden_layers,
        hidden_size=cfg.hidden_size,
        vocab_size=cfg.vocab_size,
        tokens_per_sample=text_tokens + image_token_count(grid, grid, cfg.tokens_per_crop),
        batch_size=batch_size,
        method=method,
        activation_bytes=_activation_bytes(precision),
        gradient_checkpointing=gradient_checkpointing,
        pixel_bytes_per_sample=(grid * grid + 1) * 3 * crop * crop * 4,
    )


def plan_for_probe_spec(spec: Any) -> MemoryPlan:
    """The plan of a `memory_probe.ProbeSpec`, before it runs."""
    return plan_for_phi3v_config(
        spec.config,
        method=spec.method,
        precision=spec.precision,
        num_crops=spec.grid * spec.grid,
        batch_size=spec.batch_size,
        gradient_checkpointing=spec.gradient_checkpointing,
        text_tokens=spec.text_tokens,
        num_layers=spec.num_layers,
        lora_rank=spec.lora_rank,
        answer_tokens=spec.answer_tokens,
    )


def plan_from_probe(run: dict[str, Any], config: dict[str, Any] | None = None) -> MemoryPlan:
    """The plan of a measured probe, with the parameter bytes it counted."""
    spec = run["spec"]
    geometry = run.get("geometry") or config or {}
    return MemoryPlan(
        weight_bytes=run["weight_bytes"],
        trainable_bytes=run["trainable_bytes"],
        largest_trainable_bytes=run["largest_trainable_bytes"],
        loss_tokens_per_sample=run["loss_tokens"] // spec["batch_size"],
        num_layers=spec["num_layers"],
        hidden_size=geometry["hidden_size"],
        vocab_size=geometry["vocab_size"],
        tokens_per_sample=run["tokens_per_sample"],
        batch_size=spec["batch_size"],
        method=spec["method"],
        activation_bytes=_activation_bytes(spec.get("precision", "fp32")),
        **_cast_copies(
            spec.get("precision", "fp32"),
            tuple(run.get("linear_weight_bytes", (0.0, 0.0))),
            spec["num_layers"],
        ),
        gradient_checkpointing=spec["gradient_checkpointing"],
        pixel_bytes_per_sample=run["pixel_bytes"] / spec["batch_size"],
    )


# -- fitting ----------------------------------------------------------------------------------
#: With gradient checkpointing (non-reentrant, whole decoder layers) a layer keeps only its
#: input hidden state until the backward pass: one value per token per hidden unit. Used
#: when the benchmark has not measured checkpointed runs.
CHECKPOINTED_LAYER_ANALYTIC = 1.0


def coefficients_from_fit(fitted: dict[str, float], source: str) -> Coefficients:
    """`Coefficients` from `fit_coefficients`' output, with the analytic checkpointed value
    when no checkpointed run was measured."""
    return Coefficients(
        layer=fitted["layer"],
        checkpointed_layer=fitted.get("checkpointed_layer", CHECKPOINTED_LAYER_ANALYTIC),
        base=fitted["base"],
        transient=fitted.get("transient", 0.0),
        source=source,
    )


def _token_values(run: dict[str, Any]) -> float:
    """Bytes of one fp32 value per token per hidden unit in `run`'s batch."""
    return run["tokens"] * run["geometry"]["hidden_size"] * 4


def _static_bytes(run: dict[str, Any]) -> float:
    """Weights, AdamW states, every gradient and the pixels of a measured run."""
    return run["weight_bytes"] + 3 * run["trainable_bytes"] + run["pixel_bytes"]


def _through_origin(pairs: list[tuple[float, float]]) -> float | None:
    """Least squares slope of y = c x over (x, y) pairs."""
    den = sum(x * x for x, _ in pairs)
    return sum(x * y for x, y in pairs) / den if den else None


def fit_coefficients(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Coefficients from measured probes (least squares through the origin).

    `layer` (`checkpointed_layer`): per-layer growth of LoRA runs' peaks without (with)
    gradient checkpointing beyond the growth of their parameter bytes, between depths of the
    same batch (with checkpointing from depth 1: depth 0 recomputes nothing); `base`: what
    LoRA runs without checkpointing hold beyond weights, states, gradients, pixels, layers
    and head; `transient`: what full fine-tuning runs hold beyond
    weights, states, gradients, pixels and `base`, in largest trainable tensors, from the
    runs whose estimated peak is that phase (`transient_runs` of them). Both num_crops are
    pooled; only fp32 runs count.
    """
    groups: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    for run in runs:
        spec = run["spec"]
        if spec.get("precision", "fp32") != "fp32":
            continue  # the coefficients are fp32 values; half precision halves them
        groups.setdefault((spec["method"], spec["gradient_checkpointing"]), []).append(run)

    def per_layer(group: list[dict[str, Any]], min_depth: int = 0) -> float | None:
        pairs = []
        for a in group:
            for b in group:
                la, lb = a["spec"]["num_layers"], b["spec"]["num_layers"]
                if la < min_depth or lb <= la or a["tokens"] != b["tokens"]:
                    continue
                growth = (b["peak_bytes"] - a["peak_bytes"]) - (_static_bytes(b) - _static_bytes(a))
                pairs.append((_token_values(a) * (lb - la), growth))
        return _through_origin(pairs)

    out: dict[str, float] = {}
    lora = groups.get(("lora", False), [])
    layer = per_layer(lora)
    if layer is None:
        return out
    out["layer"] = layer
    head = HEAD_VALUES * 4
    out["base"] = _through_origin(
        [
            (
                _token_values(run),
                run["peak_bytes"]
                - _static_bytes(run)
                - run["spec"]["num_layers"] * layer * _token_values(run)
                - head * run["loss_tokens"] * run["geometry"]["vocab_size"],
            )
            for run in lora
        ]
    )
    # a model without layers has no layer to recompute: checkpointed growth from depth 1
    checkpointed = per_layer(groups.get(("lora", True), []), min_depth=1)
    if checkpointed is not None:
        out["checkpointed_layer"] = checkpointed
    full = groups.get(("full", False), []) + groups.get(("full", True), [])
    # Fit on the runs whose peak is the end of the backward pass; which those are depends on
    # the fit, so repeat until the set stops changing.
    ending = full
    for _ in range(len(full) + 1):
        transient = _through_origin(
            [
                (
                    run["largest_trainable_bytes"],
                    run["peak_bytes"] - _static_bytes(run) - out["base"] * _token_values(run),
                )
                for run in ending
            ]
        )
        if transient is None:
            break
        fitted = coefficients_from_fit({**out, "transient": transient}, "fit")
        now = [
            run
            for run in full
            if estimate_peak(plan_from_probe(run), fitted).phase == "optimizer step"
        ]
        if now == ending:
            out["transient"] = transient
            out["transient_runs"] = float(len(ending))
            break
        ending = now
    return out


# -- vistune train ------------------------------------------------------------------------------
def plan_for_training(
    model: Any,
    config: Any,
    precision: str,
    batch: dict[str, Any],
    vision_prefixes: tuple[str, ...] = (),
) -> MemoryPlan:
    """The plan of `vistune train`'s step: its prepared model, its settings, and the padded
    length and pixel tensor of a collated sample batch."""
    rows = batch["input_ids"].shape[0]
    pixels = batch.get("pixel_values")
    pixel_bytes = pixels.numel() * pixels.element_size() / rows if pixels is not None else 0.0
    labels = batch.get("labels")
    loss_tokens = (
        int((labels[:, 1:] != -100).sum(dim=1).max()) if labels is not None else ANSWER_TOKENS
    )
    return plan_for_model(
        model,
        method=config.method,
        precision=precision,
        batch_size=config.per_device_batch_size,
        tokens_per_sample=int(batch["input_ids"].shape[1]),
        gradient_checkpointing=config.gradient_checkpointing,
        pixel_bytes_per_sample=pixel_bytes,
        loss_tokens_per_sample=loss_tokens,
        vision_prefixes=vision_prefixes,
    )


def visible_accelerator() -> tuple[str | None, float | None]:
    """(name, total bytes) of the current CUDA device, or (None, None) on a CPU-only machine."""
    import torch

    if not torch.cuda.is_available():
        return None, None
    index = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return props.name, float(props.total_memory)


def estimate_record(plan: MemoryPlan) -> dict[str, Any]:
    """The estimate and what it was computed from, for RUN_DIR/memory_estimate.json."""
    from dataclasses import asdict

    estimate = estimate_peak(plan)
    return {
        "plan": asdict(plan),
        "parts_bytes": estimate.parts,
        "total_bytes": estimate.total,
        "coefficients": asdict(COEFFICIENTS),
    }
