"""vistune: fine-tune vision-language models on product image catalogs.

Importing the package registers the native Phi-3-vision implementation with transformers'
Auto classes, so `AutoModelForCausalLM.from_pretrained(folder)` works without remote code.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vistune")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"


def _register_models() -> None:
    # Registration is cheap but imports transformers; keep it best-effort-free: any failure
    # here is a real bug and must surface, so no try/except.
    from vistune.models.phi3v import register

    register()


_register_models()
