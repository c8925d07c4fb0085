"""Peak accelerator memory of a training step, estimated before training starts.

The estimate is a sum of parts whose sizes are exact or fitted:

- weights: every parameter and buffer as loaded (vistune loads LoRA and full fine-tuning in
  fp32 and trains under bf16/fp16 autocast; QLoRA holds the language model in 4 bits);
- gradients and AdamW states: 1 + 2 copies of the trainable parameters;
- activations per language-model layer: `layer` values per token per hidden unit without
  gradient checkpointing; with it, `checkpointed_layer` values per layer plus one layer's
  full set (the layer being recomputed);
- the language-model head and loss: `head` values per token per vocabulary entry (logits,
  their fp32 upcast and gradient);
- the pixel values of the batch.

Activations scale with the batch, so the largest batch that fits follows from the same sum.
The coefficients are fitted by `benchmarks/full_size.py` (`memory.fit_coefficients`) on
Phi-3-vision at full width on CPU in fp32, and copied here; `tests/training/test_memory.py`
checks them against that file and checks the estimate against steps measured at a
different, small geometry. Activations in bf16/fp16 are taken as half the fp32 bytes (not
measured: no GPU was lent when the coefficients were fitted).
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


@dataclass(frozen=True)
class Coefficients:
    """Fitted activation sizes, in 4-byte values (see module docstring)."""

    layer: dict[str, float]
    checkpointed_layer: dict[str, float]
    head: dict[str, float]
    source: str = ""


#: From benchmarks/results/full_size.json ("coefficients"), Phi-3-vision at full width,
#: fp32, CPU; `qlora` uses LoRA's (same adapters, same activations). Refit by running the
#: benchmark and copying its "coefficients" block here.
COEFFICIENTS = Coefficients(
    layer={"lora": 25.4, "full": 13.2},
    checkpointed_layer={"lora": 2.0, "full": 2.0},
    head={"lora": 3.0, "full": 3.0},
    source="placeholder until the full-size benchmark has run",
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
    activation_bytes: int = 4  # 2 under bf16/fp16 autocast
    gradient_checkpointing: bool = False
    pixel_bytes_per_sample: float = 0.0
    optimizer_states: int = 2  # AdamW: exp_avg and exp_avg_sq


@dataclass(frozen=True)
class MemoryEstimate:
    parts: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    @property
    def per_sample(self) -> float:
        return self.parts.get("activations", 0.0) + self.parts.get("inputs", 0.0)

    @property
    def fixed(self) -> float:
        return self.total - self.per_sample


def _method_key(method: str) -> str:
    return "lora" if method == "qlora" else method


def activation_values_per_token(plan: MemoryPlan, coefficients: Coefficients) -> float:
    """4-byte values per token of one sample held at the peak, layers and head together."""
    method = _method_key(plan.method)
    layer = coefficients.layer[method]
    if plan.gradient_checkpointing:
        layers = plan.num_layers * coefficients.checkpointed_layer[method] + layer
    else:
        layers = plan.num_layers * layer
    return layers * plan.hidden_size + coefficients.head[method] * plan.vocab_size


def estimate_peak(plan: MemoryPlan, coefficients: Coefficients = COEFFICIENTS) -> MemoryEstimate:
    """Peak bytes of one steady-state training step, by part."""
    per_token = activation_values_per_token(plan, coefficients)
    # Layer activations follow the autocast dtype; the head's logits are upcast to fp32
    # for the loss either way.
    method = _method_key(plan.method)
    head = coefficients.head[method] * plan.vocab_size * 4
    layers = (per_token - coefficients.head[method] * plan.vocab_size) * plan.activation_bytes
    tokens = plan.tokens_per_sample * plan.batch_size
    return MemoryEstimate(
        {
            "weights": plan.weight_bytes,
            "gradients": plan.trainable_bytes,
            "optimizer": plan.optimizer_states * plan.trainable_bytes,
            "activations": tokens * (layers + head),
            "inputs": plan.pixel_bytes_per_sample * plan.batch_size,
        }
    )


def largest_batch(
    plan: MemoryPlan, device_bytes: float, coefficients: Coefficients = COEFFICIENTS
) -> int:
    """The largest per-device batch whose estimate fits `USABLE_SHARE` of the device (0: none)."""
    one = estimate_peak(_with_batch(plan, 1), coefficients)
    room = USABLE_SHARE * device_bytes - one.fixed
    if room < one.per_sample:
        return 0
    return int(room // one.per_sample)


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
        f"(method {plan.method}, {plan.activation_bytes * 8}-bit activations, batch "
        f"{plan.batch_size}, {plan.tokens_per_sample} tokens/sample, gradient checkpointing "
        f"{'on' if plan.gradient_checkpointing else 'off'}; GiB: {parts})"
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
def _activation_bytes(precision: str) -> int:
    return 2 if precision in ("bf16", "fp16") else 4


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
) -> MemoryPlan:
    """A plan from a loaded, prepared model: its parameter bytes are counted, not assumed."""
    params = list(model.parameters())
    buffers = list(model.buffers())
    text = _text_config(model.config)
    return MemoryPlan(
        weight_bytes=sum(t.numel() * t.element_size() for t in params + buffers),
        trainable_bytes=sum(p.numel() * p.element_size() for p in params if p.requires_grad),
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


def _phi3v_parameter_bytes(config: Any, method: str, lora_rank: int) -> tuple[float, float]:
    """(weight bytes, trainable bytes) of vistune's setup for `method`, counted on the meta
    device (no memory): fp32 weights for lora/full, NF4 language-model linears for qlora;
    vision tower frozen; projector trained; LoRA on the family's targets."""
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
    weights, trainable = adapters, adapters
    for name, param in model.named_parameters():
        if method == "qlora" and name in targets:
            weights += param.numel() * QLORA_BYTES_PER_WEIGHT
        else:
            weights += param.numel() * (2 if method == "qlora" else 4)
        if method == "full":
            if not has_prefix(name, vision):
                trainable += 4 * param.numel()
        elif has_prefix(name, projector) and name.rsplit(".", 1)[0] in projector_modules:
            # PEFT's modules_to_save trains a copy and keeps the original; bare parameters
            # (the separators) stay frozen under LoRA.
            trainable += 4 * param.numel()
            weights += 4 * param.numel()
    return weights, trainable


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
) -> MemoryPlan:
    """A plan for a Phi-3-vision config file (no weights needed), one square photo per sample."""
    from vistune.models.phi3v import Phi3VConfig
    from vistune.training.memory_probe import image_token_count

    overrides = {} if num_layers is None else {"num_hidden_layers": num_layers}
    cfg = Phi3VConfig.from_dict({**config, **overrides})
    grid = max(1, math.isqrt(num_crops))
    weights, trainable = _phi3v_parameter_bytes(cfg, method, lora_rank)
    crop = cfg.crop_size
    return MemoryPlan(
        weight_bytes=weights,
        trainable_bytes=trainable,
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
    """The plan of a `memory_probe.ProbeSpec` (fp32, CPU), before it runs."""
    return plan_for_phi3v_config(
        spec.config,
        method=spec.method,
        precision="fp32",
        num_crops=spec.grid * spec.grid,
        batch_size=spec.batch_size,
        gradient_checkpointing=spec.gradient_checkpointing,
        text_tokens=spec.text_tokens,
        num_layers=spec.num_layers,
        lora_rank=spec.lora_rank,
    )


def plan_from_probe(run: dict[str, Any], config: dict[str, Any] | None = None) -> MemoryPlan:
    """The plan of a measured probe, with the parameter bytes it counted."""
    spec = run["spec"]
    geometry = run.get("geometry") or config or {}
    return MemoryPlan(
        weight_bytes=run["weight_bytes"],
        trainable_bytes=run["trainable_bytes"],
        num_layers=spec["num_layers"],
        hidden_size=geometry["hidden_size"],
        vocab_size=geometry["vocab_size"],
        tokens_per_sample=run["tokens_per_sample"],
        batch_size=spec["batch_size"],
        method=spec["method"],
        activation_bytes=4,
        gradient_checkpointing=spec["gradient_checkpointing"],
        pixel_bytes_per_sample=run["pixel_bytes"] / spec["batch_size"],
    )


# -- fitting ----------------------------------------------------------------------------------
#: With gradient checkpointing (non-reentrant, whole decoder layers) a layer keeps only its
#: input hidden state until the backward pass: one value per token per hidden unit. Used
#: when the benchmark has not measured checkpointed runs.
CHECKPOINTED_LAYER_ANALYTIC = 1.0


def coefficients_from_fit(fitted: dict[str, dict[str, float]], source: str) -> Coefficients:
    """`Coefficients` from `fit_coefficients`' output; LoRA's stand in for QLoRA's, and the
    analytic checkpointed value for a method without checkpointed runs."""
    checkpointed = {
        method: fitted["checkpointed_layer"].get(method, CHECKPOINTED_LAYER_ANALYTIC)
        for method in fitted["layer"]
    }
    return Coefficients(
        layer=dict(fitted["layer"]),
        checkpointed_layer=checkpointed,
        head=dict(fitted["head"]),
        source=source,
    )


def fit_coefficients(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Coefficients from measured probes (least squares through the origin).

    For each method: `layer` from the no-checkpointing runs' per-layer growth beyond the
    parameter bytes, `checkpointed_layer` likewise from the checkpointing runs, `head` from
    what is left at the runs' depths after weights, gradients, AdamW states, inputs and
    layers. Runs of both num_crops are pooled (tokens enter as a factor).
    """
    out: dict[str, dict[str, float]] = {"layer": {}, "checkpointed_layer": {}, "head": {}}
    by_group: dict[tuple[str, bool], list[dict[str, Any]]] = {}
    for run in runs:
        spec = run["spec"]
        by_group.setdefault((spec["method"], spec["gradient_checkpointing"]), []).append(run)

    def per_layer(group: list[dict[str, Any]]) -> float | None:
        """Least squares of activation bytes per layer / (tokens * hidden * 4) over pairs of
        depths at the same num_crops."""
        num = den = 0.0
        for a in group:
            for b in group:
                la, lb = a["spec"]["num_layers"], b["spec"]["num_layers"]
                if lb <= la or a["tokens"] != b["tokens"]:
                    continue
                static = (b["weight_bytes"] - a["weight_bytes"]) + 3 * (
                    b["trainable_bytes"] - a["trainable_bytes"]
                )
                growth = (b["peak_bytes"] - a["peak_bytes"] - static) / (lb - la)
                unit = a["tokens"] * a["geometry"]["hidden_size"] * 4
                num += growth * unit
                den += unit * unit
        return num / den if den else None

    for method in ("lora", "full"):
        plain = per_layer(by_group.get((method, False), []))
        if plain is None:
            continue
        out["layer"][method] = plain
        ckpt = per_layer(by_group.get((method, True), []))
        if ckpt is not None:
            out["checkpointed_layer"][method] = ckpt
        num = den = 0.0
        for run in by_group.get((method, False), []):
            spec, geometry = run["spec"], run["geometry"]
            rest = (
                run["peak_bytes"]
                - run["weight_bytes"]
                - 3 * run["trainable_bytes"]
                - run["pixel_bytes"]
                - spec["num_layers"] * plain * run["tokens"] * geometry["hidden_size"] * 4
            )
            unit = run["tokens"] * geometry["vocab_size"] * 4
            num += rest * unit
            den += unit * unit
        out["head"][method] = num / den
    return out


# -- vistune train ------------------------------------------------------------------------------
def plan_for_training(model: Any, config: Any, precision: str, batch: dict[str, Any]) -> MemoryPlan:
    """The plan of `vistune train`'s step: its prepared model, its settings, and the padded
    length and pixel tensor of a collated sample batch."""
    rows = batch["input_ids"].shape[0]
    pixels = batch.get("pixel_values")
    pixel_bytes = pixels.numel() * pixels.element_size() / rows if pixels is not None else 0.0
    return plan_for_model(
        model,
        method=config.method,
        precision=precision,
        batch_size=config.per_device_batch_size,
        tokens_per_sample=int(batch["input_ids"].shape[1]),
        gradient_checkpointing=config.gradient_checkpointing,
        pixel_bytes_per_sample=pixel_bytes,
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
