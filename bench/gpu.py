"""A BERT-base-size tagger on an NVIDIA GPU, in one run: fp16 ONNX through the CUDA and TensorRT
execution providers and PyTorch fp16 at sequence 64, batches 32 to 512, then the serving tagger end
to end. bench/gpu.sh prepares the Python and runs this:

    python bench/gpu.py [--smoke] [--deadline 420] [--out DIR]

Nothing is downloaded: the encoder is BertConfig at base size with random weights (speed does not
depend on them), inside the project's BertCrf emission graph, and the tokenizer is a WordPiece
trained here on synthetic products. Each case is recorded as measured, skipped (with the reason) or
failed, and the JSON is rewritten after each one, so a run cut short still reports what it got.
--smoke: a tiny config on the CPU execution provider, to check the script anywhere in a minute.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import types
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from model.synth import DEMO_TAXONOMY  # noqa: E402
TARGET_EVENTS_PER_SECOND = 20_000
BASE = {"name": "BERT-base (random weights)", "layers": 12, "hidden": 768, "heads": 12, "intermediate": 3072,
        "vocab": 30522}
TINY = {"name": "tiny BERT (smoke)", "layers": 2, "hidden": 64, "heads": 2, "intermediate": 256, "vocab": 30522}
TRT_RESERVE_S = 150   # an engine build for BERT-base takes minutes; don't start one with less left
CASE_RESERVE_S = 15


class Clock:
    """The run's deadline: cases that would not fit are skipped and say so."""

    def __init__(self, budget_s: float) -> None:
        self.start, self.budget = time.monotonic(), budget_s

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.budget - self.elapsed()


class Report:
    """The result JSON, rewritten (atomically) after every change."""

    def __init__(self, path: Path, data: dict) -> None:
        self.path, self.data = path, data
        self.write()

    def case(self, **row) -> dict:
        self.data["cases"].append(row)
        self.write()
        status = row.get("status")
        detail = (f"{row['events_per_second']:,.0f} events/s, p50 {row['per_call']['p50_ms']} ms"
                  if status == "measured" else row.get("reason", ""))
        print(f"[{row.get('engine')}{'' if row.get('batch') is None else ', batch ' + str(row['batch'])}] "
              f"{status}: {detail}", flush=True)
        return row

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str), encoding="utf-8")
        os.replace(tmp, self.path)


def _quantiles(ms: list[float]) -> dict:
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 3) for q in (50, 95, 99)}


def _distribution(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _load_library(soname: str) -> str | None:
    """None if the shared library loads, else why not (also tries pip's tensorrt_libs folder)."""
    try:
        ctypes.CDLL(soname)
        return None
    except OSError as err:
        first = str(err)
    try:
        import tensorrt_libs  # the pip tensorrt package keeps its libraries here

        ctypes.CDLL(str(Path(tensorrt_libs.__file__).parent / soname))
        return None
    except (ImportError, OSError):
        return first


def environment(smoke: bool) -> dict:
    env: dict = {"python": platform.python_version(), "executable": sys.executable, "platform": platform.platform(),
                 "cpu_cores": os.cpu_count(), "smoke": smoke}
    try:
        import torch

        env.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
            env["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 1024 ** 3, 1)
    except ImportError as err:
        env.update(torch=None, torch_error=str(err))
    try:
        import onnxruntime as ort

        env.update(onnxruntime=ort.__version__, onnxruntime_listed_providers=ort.get_available_providers(),
                   onnxruntime_gpu_package=_distribution("onnxruntime-gpu"),
                   onnxruntime_cpu_package=_distribution("onnxruntime"))
    except ImportError as err:
        env.update(onnxruntime=None, onnxruntime_error=str(err))
    env["tensorrt_library_error"] = _load_library("libnvinfer.so.10")
    if shutil.which("nvidia-smi"):
        query = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        env["nvidia_smi"] = query.stdout.strip() or query.stderr.strip()
    return env


def ensure_torchcrf(notes: list[str]) -> None:
    """BertCrf builds a torchcrf.CRF; the GPU image may lack pytorch-crf (bench/gpu.sh --prepare
    carries it). Only the CRF's parameters matter here, so a stand-in with the same ones will do."""
    try:
        import torchcrf  # noqa: F401
        return
    except ImportError:
        pass
    import torch
    from torch import nn

    class CRF(nn.Module):
        def __init__(self, num_tags: int, batch_first: bool = False) -> None:
            super().__init__()
            self.num_tags, self.batch_first = num_tags, batch_first
            self.start_transitions = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
            self.end_transitions = nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
            self.transitions = nn.Parameter(torch.empty(num_tags, num_tags).uniform_(-0.1, 0.1))

    sys.modules["torchcrf"] = types.SimpleNamespace(CRF=CRF)
    notes.append("pytorch-crf is not installed: a stand-in CRF with the same parameters was used "
                 "(only its parameters reach crf.npz; the emission graph does not use it)")


def build_model(config: dict, labels: list[str]):
    """The project's BertCrf around a random-weight BERT encoder of the given size."""
    import torch
    from transformers import BertConfig

    from model.bert_crf import BertCrf, encoder_from_config

    torch.manual_seed(0)
    bert = BertConfig(vocab_size=config["vocab"], hidden_size=config["hidden"], num_hidden_layers=config["layers"],
                      num_attention_heads=config["heads"], intermediate_size=config["intermediate"],
                      max_position_embeddings=512)
    return BertCrf(encoder_from_config(bert), len(labels)).eval()


def write_bundle(root: Path, model, tokenizer, labels: list[str], log: Callable[[str], None]) -> Path:
    """A servable bundle through the project's own export steps: fp32 ONNX, fp16 conversion
    (inputs and outputs keep their types), CRF parameters, tokenizer, manifest with hashes.
    No parity gate: the weights are random, so there is nothing to preserve."""
    from stream.tagging.bundle import file_hashes, write_manifest
    from stream.tagging.manifest import FORMAT_VERSION, MODEL_FILES, Manifest
    from export.graph import convert_fp16, export_onnx
    from stream.tagging.crf import CrfParams

    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    export_onnx(model, root / MODEL_FILES["fp32"], opset=17)
    log(f"exported fp32 ONNX in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    convert_fp16(root / MODEL_FILES["fp32"], root / MODEL_FILES["fp16"])
    log(f"converted to fp16 in {time.perf_counter() - t0:.1f} s")
    crf = model.crf
    CrfParams(crf.transitions.detach().cpu().numpy(), crf.start_transitions.detach().cpu().numpy(),
              crf.end_transitions.detach().cpu().numpy()).save_npz(root / "crf.npz")
    tokenizer.save(str(root / "tokenizer.json"))
    shutil.copyfile(DEMO_TAXONOMY, root / "taxonomy.json")
    (root / "reference.json").write_text("{}", encoding="utf-8")
    manifest = Manifest(format_version=FORMAT_VERSION, name="tagstream-gpu-bench", version="random-weights",
                        labels=labels, max_length=128, stride=32,
                        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        training_data_sha256="", files=file_hashes(root),
                        source={"note": "bench/gpu.py: random weights, for speed only"})
    write_manifest(root, manifest)
    return root


def iterations(one_call_s: float, seconds: float = 1.5) -> int:
    """Enough timed calls for about ``seconds``, within [5, 200]."""
    return int(min(200, max(5, seconds / max(one_call_s, 1e-4))))


def time_calls(call: Callable[[], None], sync: Callable[[], None]) -> tuple[float, list[float]]:
    """Warm up, then time calls one by one (each waits for its result, as serving does)."""
    for _ in range(3):
        call()
    sync()
    t0 = time.perf_counter()
    call()
    sync()
    n = iterations(time.perf_counter() - t0)
    per_call = []
    start = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        sync()
        per_call.append((time.perf_counter() - t0) * 1000)
    return time.perf_counter() - start, per_call


def measured(engine: str, batch: int, seq: int, total_s: float, per_call: list[float], **extra) -> dict:
    return {"engine": engine, "batch": batch, "sequence": seq, "status": "measured", "calls": len(per_call),
            "events_per_second": round(batch * len(per_call) / total_s, 1), "per_call": _quantiles(per_call), **extra}


def torch_cases(report: Report, clock: Clock, model, batches: list[int], seq: int, vocab: int, smoke: bool) -> None:
    import torch

    device = "cuda" if torch.cuda.is_available() and not smoke else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    engine = f"pytorch {'fp16 cuda' if device == 'cuda' else 'fp32 cpu'}, eager (sdpa attention)"
    model = model.to(device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for batch in batches:
        if clock.left() < CASE_RESERVE_S:
            report.case(engine=engine, batch=batch, status="skipped", reason="deadline")
            continue
        ids = torch.randint(1000, vocab, (batch, seq), device=device)
        mask = torch.ones_like(ids)
        with torch.inference_mode():
            total, calls = time_calls(lambda: model(ids, mask), sync)
        report.case(**measured(engine, batch, seq, total, calls))
    model.to(device="cpu", dtype=torch.float32)
    if device == "cuda":
        torch.cuda.empty_cache()


def ort_session(path: Path, providers: list, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=providers)


def ort_cases(report: Report, clock: Clock, session, engine: str, device: str, batches: list[int], seq: int,
              vocab: int) -> None:
    """Per batch: IO binding (inputs on the device, output left there: the model alone) and plain
    run() (host arrays in and out, as the serving tagger calls it)."""
    import onnxruntime as ort

    for batch in batches:
        if clock.left() < CASE_RESERVE_S:
            report.case(engine=engine, batch=batch, status="skipped", reason="deadline")
            continue
        rng = np.random.default_rng(batch)
        ids = rng.integers(1000, vocab, (batch, seq), dtype=np.int64)
        mask = np.ones_like(ids)
        binding = session.io_binding()
        binding.bind_ortvalue_input("input_ids", ort.OrtValue.ortvalue_from_numpy(ids, device, 0))
        binding.bind_ortvalue_input("attention_mask", ort.OrtValue.ortvalue_from_numpy(mask, device, 0))
        binding.bind_output("emissions", device)

        def bound() -> None:
            session.run_with_iobinding(binding)

        total, calls = time_calls(bound, binding.synchronize_outputs)
        report.case(**measured(engine + ", IO binding", batch, seq, total, calls))
        total, calls = time_calls(lambda: session.run(["emissions"], {"input_ids": ids, "attention_mask": mask}),
                                  lambda: None)
        report.case(**measured(engine + ", run() with host arrays", batch, seq, total, calls))


def serving_case(report: Report, clock: Clock, bundle: Path, model, products: list[dict], chunk: int,
                 emissions_from: str) -> dict:
    """The serving tagger on products (title + description) in worker-sized chunks: tokenise,
    window, pad, emissions, numpy Viterbi and marginals, spans. ``emissions_from``: "ort-cuda",
    "ort-cpu", or "torch" (PyTorch on the GPU, fp16; on the CPU in smoke mode), which is how the
    serving path is measured on a GPU where onnxruntime has no CUDA provider."""
    import torch

    from stream.tagging.pipeline import Pipeline
    from stream.tagging.tagger import Tagger

    if clock.left() < CASE_RESERVE_S * 2:
        return report.case(engine=f"serving tagger ({emissions_from})", status="skipped", reason="deadline")
    if emissions_from == "ort-cuda":
        tagger = Tagger.load(bundle, variant="fp16", device="cuda", batch_size=chunk)
        engine = "serving tagger, onnxruntime CUDA EP fp16"
    elif emissions_from == "ort-cpu":
        tagger = Tagger.load(bundle, variant="fp16", device="cpu", batch_size=chunk)
        engine = "serving tagger, onnxruntime CPU EP fp16 (smoke)"
    else:
        # The fp32 session is never run: Tagger.score calls self.emissions, replaced below.
        tagger = Tagger.load(bundle, variant="fp32", device="cpu", threads=1, batch_size=chunk)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.float16 if device == "cuda" else torch.float32
        torch_model = model.to(device=device, dtype=dtype)

        def torch_emissions(batch):
            ids = torch.from_numpy(batch.input_ids).to(device)
            mask = torch.from_numpy(batch.attention_mask).to(device)
            with torch.inference_mode():
                # shape: (batch, seq, tags)
                return torch_model(ids, mask).float().cpu().numpy()

        tagger.emissions = torch_emissions
        engine = f"serving tagger, PyTorch {'fp16 CUDA' if device == 'cuda' else 'fp32 CPU'} emissions"
    model_ms: list[float] = []
    inner = tagger.emissions

    def timed(batch):
        t0 = time.perf_counter()
        out = inner(batch)
        model_ms.append((time.perf_counter() - t0) * 1000)
        return out

    tagger.emissions = timed
    pipeline = Pipeline.around(tagger)
    chunks = [products[i:i + chunk] for i in range(0, len(products), chunk)]
    for c in chunks[:2]:
        pipeline(c)  # warm-up
    model_ms.clear()
    per_chunk = []
    start = time.perf_counter()
    for c in chunks:
        t0 = time.perf_counter()
        pipeline(c)
        per_chunk.append((time.perf_counter() - t0) * 1000)
    total = time.perf_counter() - start
    model.to(device="cpu", dtype=torch.float32)
    texts = sum(1 for p in products for f in ("title", "description") if p.get(f))
    row = report.case(engine=engine, status="measured", products=len(products), texts=texts, chunk_products=chunk,
                      events_per_second=round(len(products) / total, 1), texts_per_second=round(texts / total, 1),
                      model_share=round(sum(model_ms) / 1000 / total, 3), per_call=_quantiles(per_chunk))
    # The end-to-end figure to quote: onnxruntime's when it ran on the GPU, else the first measured.
    if emissions_from == "ort-cuda" or "serving_end_to_end" not in report.data:
        report.data["serving_end_to_end"] = row
        report.write()
    return row


def trt_cases(report: Report, clock: Clock, fp32_model: Path, work: Path, batches: list[int], seq: int,
              vocab: int, notes: list[str], smoke: bool) -> None:
    """TensorRT builds fp16 kernels itself from the fp32 graph; one engine covers every batch
    (a shape profile from the smallest to the largest), built on the first call and timed apart."""
    import onnxruntime as ort

    engine = "onnxruntime TensorRT EP fp16"
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        report.case(engine=engine, status="unavailable", reason="this onnxruntime has no TensorRT execution provider")
        return
    missing = _load_library("libnvinfer.so.10")
    if missing:
        report.case(engine=engine, status="unavailable", reason=f"TensorRT libraries not found ({missing})")
        return
    if smoke:
        report.case(engine=engine, status="skipped", reason="smoke mode: the provider and its libraries are there")
        return
    if clock.left() < TRT_RESERVE_S:
        report.case(engine=engine, status="skipped", reason=f"deadline: under {TRT_RESERVE_S} s left for an engine build")
        return

    def shapes(b: int) -> str:
        return f"input_ids:{b}x{seq},attention_mask:{b}x{seq}"

    options = {"trt_fp16_enable": True, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(work / "trt"),
               "trt_profile_min_shapes": shapes(min(batches)), "trt_profile_max_shapes": shapes(max(batches)),
               "trt_profile_opt_shapes": shapes(max(batches) // 2 or 1)}
    session = ort_session(fp32_model, [("TensorrtExecutionProvider", options), "CUDAExecutionProvider",
                                       "CPUExecutionProvider"])
    if session.get_providers()[0] != "TensorrtExecutionProvider":
        report.case(engine=engine, status="unavailable", reason=f"session fell back to {session.get_providers()}")
        return
    ids = np.ones((min(batches), seq), dtype=np.int64)
    t0 = time.perf_counter()
    session.run(["emissions"], {"input_ids": ids, "attention_mask": ids})
    build_s = round(time.perf_counter() - t0, 1)
    notes.append(f"TensorRT engine build (first call) took {build_s} s")
    report.data["tensorrt_engine_build_s"] = build_s
    ort_cases(report, clock, session, engine, "cuda", batches, seq, vocab)


def best(cases: list[dict]) -> dict | None:
    rows = [c for c in cases if c.get("status") == "measured" and c.get("sequence")]
    if not rows:
        return None
    top = max(rows, key=lambda c: c["events_per_second"])
    return {k: top[k] for k in ("engine", "batch", "events_per_second", "per_call")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny config on the CPU execution provider")
    parser.add_argument("--deadline", type=float, default=420, help="seconds; cases that would not fit are skipped")
    parser.add_argument("--batches", default=None, help="comma-separated (default 32,64,128,256,512; smoke 32,64)")
    parser.add_argument("--seq", type=int, default=64, help="sequence length of the model-only cases")
    parser.add_argument("--e2e-products", type=int, default=None, help="products for the serving case "
                        "(default 4096; smoke 96)")
    parser.add_argument("--out", default=None, help="directory (default $OUT if set, else bench/results; "
                        "smoke: bench/.cache/gpu-smoke)")
    args = parser.parse_args()
    try:
        batches = [int(b) for b in (args.batches or ("32,64" if args.smoke else "32,64,128,256,512")).split(",")]
    except ValueError:
        sys.exit(f"--batches: expected comma-separated integers, got {args.batches!r}")
    if min(batches) < 1 or args.seq < 8 or args.deadline < 30:
        sys.exit("--batches must be positive, --seq at least 8 and --deadline at least 30 s")
    out_dir = Path(args.out or os.environ.get("OUT")
                   or ROOT / "bench" / (".cache/gpu-smoke" if args.smoke else "results"))
    clock = Clock(args.deadline)
    config = TINY if args.smoke else BASE
    notes: list[str] = []
    report = Report(out_dir / "gpu.json", {
        "benchmark": "gpu", "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": environment(args.smoke), "model": config, "sequence_length": args.seq, "batches": batches,
        "deadline_s": args.deadline, "target_events_per_second": TARGET_EVENTS_PER_SECOND, "cases": [],
        "notes": notes})

    def log(line: str) -> None:
        print(f"[{clock.elapsed():6.1f} s] {line}", flush=True)

    log(f"machine: {json.dumps(report.data['machine'])}")

    from model.synth import generate, load_taxonomy_json
    from stream.tagging.spans import label_list

    taxonomy = load_taxonomy_json(DEMO_TAXONOMY)
    labels = label_list(t["name"] for t in taxonomy["types"])
    ensure_torchcrf(notes)
    model = build_model(config, labels)
    report.data["model"]["parameters"] = sum(p.numel() for p in model.parameters())
    log(f"built {config['name']}: {report.data['model']['parameters']:,} parameters, {len(labels)} tags")

    # 1. PyTorch: the reference, and the only GPU engine when onnxruntime has no CUDA provider.
    try:
        torch_cases(report, clock, model, batches, args.seq, config["vocab"], args.smoke)
    except Exception as err:  # a failed case is a result; the others still run
        report.case(engine="pytorch", status="failed", reason=f"{type(err).__name__}: {err}",
                    traceback=traceback.format_exc()[-2000:])

    # 2. The bundle: fp32 + fp16 ONNX through the project's export steps, tokenizer, CRF.
    work = Path(tempfile.mkdtemp(prefix="tagstream-gpu-"))
    bundle = None
    products = generate(taxonomy, args.e2e_products or (96 if args.smoke else 4096), seed=401, lang="en",
                        products=True)
    try:
        from model.vocab import build_wordpiece

        corpus = generate(taxonomy, 3000, seed=402, lang="mixed", products=True)
        tokenizer = build_wordpiece([r["title"] for r in corpus] + [r["description"] for r in corpus if r["description"]],
                                    vocab_size=config["vocab"])
        bundle = write_bundle(work / "bundle", model, tokenizer, labels, log)
        report.data["bundle_mib"] = round(sum(p.stat().st_size for p in bundle.iterdir()) / 2 ** 20, 1)
    except Exception as err:
        report.case(engine="export", status="failed", reason=f"{type(err).__name__}: {err}",
                    traceback=traceback.format_exc()[-2000:])

    # 3. onnxruntime fp16: CUDA EP (or the CPU EP in smoke mode).
    cuda_ep = False
    if bundle is not None:
        import onnxruntime as ort

        if hasattr(ort, "preload_dlls") and not args.smoke:
            try:
                ort.preload_dlls()  # CUDA and cuDNN from the nvidia-* wheels torch brought
            except Exception as err:
                notes.append(f"onnxruntime.preload_dlls failed: {err}")
        fp16 = bundle / "model.fp16.onnx"
        if args.smoke:
            ort_cases(report, clock, ort_session(fp16, ["CPUExecutionProvider"]), "onnxruntime CPU EP fp16 (smoke)",
                      "cpu", batches, args.seq, config["vocab"])
        elif "CUDAExecutionProvider" not in ort.get_available_providers():
            report.case(engine="onnxruntime CUDA EP fp16", status="unavailable",
                        reason=f"onnxruntime {ort.__version__} here has no CUDA provider (providers: "
                               f"{ort.get_available_providers()}); the onnxruntime-gpu wheel is over 200 MB, more "
                               f"than a device run can carry")
        else:
            try:
                session = ort_session(fp16, [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"])
                if session.get_providers()[0] != "CUDAExecutionProvider":
                    report.case(engine="onnxruntime CUDA EP fp16", status="unavailable",
                                reason=f"session fell back to {session.get_providers()}")
                else:
                    cuda_ep = True
                    ort_cases(report, clock, session, "onnxruntime CUDA EP fp16", "cuda", batches, args.seq,
                              config["vocab"])
                    del session
            except Exception as err:
                report.case(engine="onnxruntime CUDA EP fp16", status="failed", reason=f"{type(err).__name__}: {err}",
                            traceback=traceback.format_exc()[-2000:])

    # 4. The serving tagger end to end: with onnxruntime where it reaches the GPU (the CPU in smoke
    # mode), and with PyTorch emissions, the GPU path that needs no onnxruntime-gpu.
    if bundle is not None:
        sources = ["ort-cuda" if cuda_ep else "ort-cpu"] if cuda_ep or args.smoke else []
        for source in [*sources, "torch"]:
            try:
                serving_case(report, clock, bundle, model, products, 32 if args.smoke else 256, source)
            except Exception as err:
                report.case(engine=f"serving tagger ({source})", status="failed", reason=f"{type(err).__name__}: {err}",
                            traceback=traceback.format_exc()[-2000:])

    # 5. TensorRT last: its engine build is the one step that can run long. In smoke mode this only
    # checks that the provider and its libraries are found.
    if bundle is not None:
        try:
            trt_cases(report, clock, bundle / "model.onnx", work, batches, args.seq, config["vocab"], notes,
                      args.smoke)
        except Exception as err:
            report.case(engine="onnxruntime TensorRT EP fp16", status="failed", reason=f"{type(err).__name__}: {err}",
                        traceback=traceback.format_exc()[-2000:])

    top = best(report.data["cases"])
    report.data.update(best_model_only=top, wall_seconds=round(clock.elapsed(), 1),
                       target_met=None if args.smoke or top is None else top["events_per_second"] >= TARGET_EVENTS_PER_SECOND)
    report.write()
    shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'engine':<58}{'batch':>6}{'events/s':>12}{'p50 ms':>9}{'p99 ms':>9}")
    for c in report.data["cases"]:
        if c.get("status") == "measured" and c.get("sequence"):
            print(f"{c['engine']:<58}{c['batch']:>6}{c['events_per_second']:>12,.0f}"
                  f"{c['per_call']['p50_ms']:>9.2f}{c['per_call']['p99_ms']:>9.2f}")
        elif c.get("status") != "measured":
            print(f"{c['engine']:<58}{str(c.get('batch') or ''):>6}  {c['status']}: {c.get('reason', '')[:90]}")
    for c in report.data["cases"]:
        if c.get("status") == "measured" and c.get("products"):
            print(f"{c['engine']}: {c['events_per_second']:,.0f} products/s, {c['texts_per_second']:,.0f} texts/s "
                  f"end to end, model {c['model_share']:.0%} of the time")
    if top:
        verdict = "" if args.smoke else (f" (target {TARGET_EVENTS_PER_SECOND:,}: "
                                         f"{'met' if report.data['target_met'] else 'NOT met'})")
        print(f"best model-only: {top['events_per_second']:,.0f} events/s, {top['engine']}, batch {top['batch']}{verdict}")
    print(f"wrote {report.path} in {clock.elapsed():.0f} s")


if __name__ == "__main__":
    main()
