"""TEST HELPER, run by test_distributed.py under torchrun with 2 CPU processes (gloo).

One FSDP2 forward/backward of vistune's model set-up (`prepare_model`, the default wrap
classes) where rank 0's batch has images and rank 1's has none. Without the model's dummy
vision pass rank 1 would skip the sharded vision layers and leave rank 0 in their
all-gather. Rank 0 writes the averaged full gradients to `OUT` for the test to compare with
a single-process computation.

    torchrun --nproc_per_node 2 fsdp_image_free_step.py MODEL_DIR DATA_DIR OUT
"""

from __future__ import annotations

import sys
from typing import Any

import cpu_fsdp_shim  # noqa: F401  (test-only: lifts accelerate's CPU gate on FSDP)
import torch
from accelerate import Accelerator
from accelerate.utils import FullyShardedDataParallelPlugin

from vistune.models.families import load_vlm
from vistune.training.config import TrainConfig
from vistune.training.data import CatalogDataset
from vistune.training.distributed import layer_classes, vision_trained
from vistune.training.model import prepare_model

ROWS = 2


def batch_for(vlm: Any, config: TrainConfig, rank: int) -> Any:
    """Rank 0: train rows 0-1 with their images; rank 1: rows 2-3 with no image."""
    dataset = CatalogDataset(
        config.data, "train", question=config.question, template=config.answer_template
    )
    items = [dataset[i] for i in range(rank * ROWS, (rank + 1) * ROWS)]
    images = [item["image"] if rank == 0 else None for item in items]
    return vlm.collate(images, [i["question"] for i in items], [i["answer"] for i in items])


def main(model_dir: str, data_dir: str, out: str) -> None:
    vlm = load_vlm(model_dir)
    config = TrainConfig.from_dict(
        {"data": data_dir, "model": model_dir, "output": out, "method": "full"}
    )
    model = prepare_model(vlm, config)
    family = vlm.family
    vision = (*family.vision_tower_prefixes, *family.projector_prefixes)
    classes = layer_classes(
        model, tuple(family.vision_tower_prefixes), vision_trained(model, vision)
    )
    assert "CLIPEncoderLayer" in classes, classes  # the vision layers are shards of their own
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2,
        auto_wrap_policy="transformer_based_wrap",
        transformer_cls_names_to_wrap=classes,
    )
    accelerator = Accelerator(fsdp_plugin=plugin, cpu=True)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    batch = batch_for(vlm, config, accelerator.process_index)
    loss = model(**batch).loss
    accelerator.backward(loss)
    grads = {}
    for name, param in model.named_parameters():
        if param.grad is not None:
            grad = param.grad
            grads[name] = grad.full_tensor() if hasattr(grad, "full_tensor") else grad
    if accelerator.is_main_process:
        torch.save({"grads": grads, "type": str(accelerator.distributed_type)}, out)
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    main(*sys.argv[1:4])
