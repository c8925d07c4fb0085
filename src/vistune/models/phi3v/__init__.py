"""Native Phi-3-vision (phi3_v) for transformers 5.x."""


def register() -> None:
    """Register phi3_v with transformers' Auto classes (filled in by the model work)."""
