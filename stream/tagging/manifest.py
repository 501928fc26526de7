"""The model bundle manifest: what a bundle holds and how to check it. Torch-free."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from stream.tagging.tokenization import UNITS

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
REQUIRED_FILES = ("model.onnx", "crf.npz", "tokenizer.json", "taxonomy.json", "reference.json")


@dataclass(frozen=True)
class Manifest:
    format_version: int
    name: str
    version: str
    labels: list[str]
    max_length: int
    stride: int
    created_at: str
    training_data_sha256: str
    files: dict[str, str]                                    # file name -> sha256
    metrics: dict = field(default_factory=dict)              # dev scores per variant
    parity: dict = field(default_factory=dict)               # the export's parity report
    source: dict = field(default_factory=dict)               # checkpoint, base model, config
    units: str = "words"                                     # what a tag sits on; older bundles: words

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Manifest":
        known = {f for f in cls.__dataclass_fields__}
        missing = [f for f in ("format_version", "name", "version", "labels", "max_length", "stride",
                               "created_at", "training_data_sha256", "files") if f not in data]
        if missing:
            raise ValueError(f"manifest lacks {', '.join(missing)}")
        if data.get("units", "words") not in UNITS:
            raise ValueError(f"manifest units must be one of {', '.join(UNITS)}, got {data['units']!r}")
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def variants(self) -> list[str]:
        return [v for v, name in MODEL_FILES.items() if name in self.files]
