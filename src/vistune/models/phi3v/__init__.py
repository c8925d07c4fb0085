"""Native Phi-3-vision (phi3_v) for transformers 5.x: no remote code needed.

`register()` (called by `import vistune`) makes transformers' Auto classes resolve
`model_type: "phi3_v"` to these classes, so `AutoModelForCausalLM.from_pretrained(folder)` loads
a downloaded official checkpoint folder even though its config.json has an `auto_map`.
"""

from vistune.models.phi3v.configuration_phi3v import Phi3VConfig
from vistune.models.phi3v.image_processing_phi3v import Phi3VImageProcessor
from vistune.models.phi3v.modeling_phi3v import (
    Phi3VForCausalLM,
    Phi3VModel,
    Phi3VPreTrainedModel,
)
from vistune.models.phi3v.processing_phi3v import Phi3VProcessor

__all__ = [
    "Phi3VConfig",
    "Phi3VForCausalLM",
    "Phi3VImageProcessor",
    "Phi3VModel",
    "Phi3VPreTrainedModel",
    "Phi3VProcessor",
    "register",
]


def register() -> None:
    """Register phi3_v with AutoConfig / AutoModel / AutoModelForCausalLM /
    AutoModelForImageTextToText (idempotent)."""
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
    )
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if CONFIG_MAPPING.get(Phi3VConfig.model_type, None) is not Phi3VConfig:
        AutoConfig.register(Phi3VConfig.model_type, Phi3VConfig, exist_ok=True)
    AutoModel.register(Phi3VConfig, Phi3VModel, exist_ok=True)
    AutoModelForCausalLM.register(Phi3VConfig, Phi3VForCausalLM, exist_ok=True)
    AutoModelForImageTextToText.register(Phi3VConfig, Phi3VForCausalLM, exist_ok=True)
    from vistune.models.phi3v.processing_phi3v import register_auto_classes

    register_auto_classes()  # AutoImageProcessor / AutoProcessor
