"""The serving tagger: a verified bundle, ONNX Runtime emissions and numpy CRF decoding.

Never imports torch or transformers; a serving install has neither.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

from stream.tagging.bundle import Bundle, BundleError, read_bundle
from stream.tagging.manifest import MODEL_FILES
from stream.tagging.crf import CrfParams, marginals, viterbi_decode
from stream.tagging.decode import ScoredText, score_units, tag_units
from stream.tagging.spans import TaggedSpan
from stream.tagging.lexicon import LEXICON_FILE, Lexicon, LexiconError, taxonomy_forms
from stream.tagging.taxonomy import Taxonomy, TaxonomyError
from stream.tagging.tokenization import PaddedBatch, TextEncoder, Units, gather_units

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# Padded tokens per ONNX Runtime call on a CPU (bench/inference.py: 64 titles in calls of at most
# 512 tokens ran 1.25x faster than in one call padded to the longest). A GPU takes whole batches.
CPU_CALL_TOKENS = 512


def cuda_device_count() -> int:
    """GPUs the CUDA driver can see; 0 without a driver. onnxruntime-gpu lists the CUDA
    provider as available on any machine, so that list alone says nothing."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def cpu_has_vnni(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has integer dot-product instructions (AVX-512 VNNI or AVX-VNNI), which
    make uint8 x int8 products fast and exact; False where that cannot be read (not Linux)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_vnni" in flags or "avx_vnni" in flags


def choose_variant(bundle: Bundle, providers: Sequence[str], vnni: bool) -> tuple[str, str]:
    """What ``variant="auto"`` serves, and why: static int8 on a CPU with VNNI when the bundle has
    it (README, "Model bundles": 3.3-3.6x batched PyTorch there, within half an F1 point), else fp32."""
    if providers[0] != CPU:
        return "fp32", "a GPU serves fp32"
    if "int8" not in bundle.manifest.variants:
        return "fp32", "the bundle has no int8 model"
    if not vnni:
        return "fp32", "this CPU has no VNNI, where int8 gains little and can saturate"
    return "int8", "a CPU with VNNI and a bundle with an int8 model"


def choose_providers(device: str) -> list[str]:
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        if CUDA not in ort.get_available_providers():
            raise BundleError("device cuda asked for, but this onnxruntime has no CUDA provider")
        return [CUDA, CPU]
    if device != "auto":
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if CUDA in ort.get_available_providers() and cuda_device_count() > 0:
        return [CUDA, CPU]
    return [CPU]


class Tagger:
    """Tags texts with one bundle. Thread-compatible: one ``tag_*`` call at a time per instance."""

    def __init__(self, bundle: Bundle, session: ort.InferenceSession, variant: str, batch_size: int,
                 taxonomy: Taxonomy | None = None) -> None:
        self.bundle = bundle
        self.session = session
        self.variant = variant
        self.batch_size = batch_size
        self.call_tokens = CPU_CALL_TOKENS if session.get_providers()[0] == CPU else None
        m = bundle.manifest
        self.labels = list(m.labels)
        self._input_names = {i.name for i in session.get_inputs()}
        self.lexicon = self._serving_lexicon(bundle, "lexicon" in self._input_names, taxonomy)
        self.encoder = TextEncoder.from_file(bundle.file("tokenizer.json"), m.max_length, m.stride, self.lexicon,
                                             m.units)
        self.crf = CrfParams.from_npz(bundle.file("crf.npz"))
        if self.crf.num_tags != len(self.labels):
            raise BundleError(f"{bundle.file('crf.npz')}: {self.crf.num_tags} tags, "
                              f"but the manifest lists {len(self.labels)} labels")

    @staticmethod
    def _serving_lexicon(bundle: Bundle, graph_wants_it: bool, taxonomy: Taxonomy | None) -> Lexicon | None:
        """The training lexicon plus every name and synonym of the bundle's taxonomy (``taxonomy``,
        when the caller has parsed it already), so a taxonomy applied after training reaches the
        features without retraining."""
        shipped = LEXICON_FILE in bundle.manifest.files
        if not graph_wants_it:
            if shipped:
                raise BundleError(f"{bundle.path}: ships {LEXICON_FILE}, but its model takes no lexicon input")
            return None
        if not shipped:
            raise BundleError(f"{bundle.path}: the model takes lexicon features, but the bundle has no {LEXICON_FILE}")
        try:
            lexicon = Lexicon.load(bundle.file(LEXICON_FILE))
            taxonomy = taxonomy or Taxonomy.load(bundle.file("taxonomy.json"))
            return lexicon.with_entries(taxonomy_forms(taxonomy))
        except (LexiconError, TaxonomyError) as err:
            raise BundleError(str(err)) from None

    @classmethod
    def load(cls, path: str | Path, *, variant: str = "fp32", device: str = "auto", threads: int | None = None,
             batch_size: int = 64) -> "Tagger":
        """Verify the bundle (every hash) and open its model on the chosen device."""
        return cls.open(read_bundle(path), variant=variant, device=device, threads=threads, batch_size=batch_size)

    @classmethod
    def open(cls, bundle: Bundle, *, variant: str = "fp32", device: str = "auto", threads: int | None = None,
             batch_size: int = 64, taxonomy: Taxonomy | None = None) -> "Tagger":
        """Open a verified bundle's model on the chosen device; variant ``auto`` picks one (choose_variant)."""
        providers = choose_providers(device)
        if variant == "auto":
            variant, why = choose_variant(bundle, providers, cpu_has_vnni())
            log.info("variant auto: serving %s (%s)", variant, why)
        if variant not in MODEL_FILES:
            raise ValueError(f"variant must be auto or one of {', '.join(MODEL_FILES)}, got {variant!r}")
        if MODEL_FILES[variant] not in bundle.manifest.files:
            raise BundleError(f"{bundle.path}: has no {variant} model (exported: {', '.join(bundle.manifest.variants)})")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle intra-op threads must not spin: they share the cores with the event loop, the Kafka
        # client and often the broker. Spinning made small batches (the 70%-load case) cost
        # about twice the CPU per event and built a queue (bench/stream.py, issue #8).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(bundle.file(MODEL_FILES[variant])), options, providers=providers)
        except Exception as err:  # onnxruntime raises its own exception types for a bad graph
            raise BundleError(f"{bundle.file(MODEL_FILES[variant])}: onnxruntime cannot load it ({err})") from None
        if providers[0] == CUDA and session.get_providers()[0] != CUDA:
            log.warning("CUDA provider requested but the session got %s; running on CPU", session.get_providers())
        return cls(bundle, session, variant, batch_size, taxonomy)

    @property
    def providers(self) -> list[str]:
        """What the session really runs on (not what was asked for)."""
        return self.session.get_providers()

    @property
    def model_name(self) -> str:
        return self.bundle.manifest.name

    @property
    def model_version(self) -> str:
        return self.bundle.manifest.version

    def emissions(self, batch: PaddedBatch) -> np.ndarray:
        feeds = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if batch.lexicon is not None:
            feeds["lexicon"] = batch.lexicon
        # shape: (batch, seq, tags)
        return self.session.run(["emissions"], feeds)[0]

    def score(self, batch: PaddedBatch) -> tuple[list[list[int]], np.ndarray]:
        # shape: (batch, units, tags)
        units = gather_units(self.emissions(batch), batch.unit_positions)
        return viterbi_decode(units, batch.unit_mask, self.crf), marginals(units, batch.unit_mask, self.crf)

    def score_units(self, units: Sequence[Units], fields: Sequence[str] | None = None,
                    bucket: bool = True) -> list[ScoredText]:
        """Tags and per-unit entropy of texts already split into units."""
        return score_units(self.encoder, units, self.score, self.labels, batch_size=self.batch_size, fields=fields,
                           bucket=bucket, entropy=True, max_tokens=self.call_tokens)

    def tag_units(self, units: Sequence[Units], fields: Sequence[str] | None = None,
                  bucket: bool = True) -> list[list[TaggedSpan]]:
        """Tag texts already split into units (the pipeline keeps the units for their token counts)."""
        return tag_units(self.encoder, units, self.score, self.labels, batch_size=self.batch_size, fields=fields,
                         bucket=bucket, max_tokens=self.call_tokens)

    def tag_texts(self, texts: Sequence[str], fields: Sequence[str] | None = None,
                  bucket: bool = True) -> list[list[TaggedSpan]]:
        return self.tag_units(self.encoder.units(texts), fields, bucket)
