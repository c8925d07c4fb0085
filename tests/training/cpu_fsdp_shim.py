"""TEST-ONLY SHIM, never shipped: `vistune` with accelerate's CPU gate on FSDP lifted.

accelerate 1.15 turns an FSDP request into FSDP only on accelerator devices; on a CPU-only
machine it keeps MULTI_CPU (plain DDP), and vistune then refuses the run. torch's FSDP2 itself
runs on CPU with gloo, so for the 2-process CPU tests this shim flips that one decision (the
distributed type, with the plugin accelerate built from the launch config or from vistune's
`fsdp` settings) and otherwise runs `python -m vistune.cli` unchanged: launch it exactly like
the CLI, e.g. `accelerate launch --config_file configs/accelerate/fsdp2.yaml
tests/training/cpu_fsdp_shim.py train --config RECIPE`.
"""

from __future__ import annotations

from typing import Any

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

_accelerate_init = AcceleratorState.__init__


def _init_with_cpu_fsdp(self: AcceleratorState, *args: Any, fsdp_plugin: Any = None, **kwargs: Any):
    _accelerate_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        # as accelerate does at the end of its own FSDP set-up: later AcceleratorState()
        # calls copy the distributed type back from PartialState
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP


AcceleratorState.__init__ = _init_with_cpu_fsdp

if __name__ == "__main__":
    from vistune.cli import main

    main()
