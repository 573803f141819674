"""GPU benchmark of the lookbook models, one process, no Ray (issue #16).

    python -m bench.gpu [--wheels bench/wheels] [--parts siglip yolo fused faiss] [--decode-workers N]
        [--fused-calls 1 2] [--images 4096] [--dry-run]

Parts, each timed after a warm-up, CUDA synchronised around the timed loop:

- `siglip`: the SigLIP-B/16 image tower (`SiglipVisionModel` from the base-patch16-224 config: width 768,
  12 layers, 12 heads, MLP 3072, 224 px, patch 16; random weights, the same FLOPs) in bfloat16 on random
  pixels, at each `--siglip-batches`; crops/s of the best batch size (the forward only, no preprocessing).
- `yolo`: YOLOv8n and YOLOv8s built from ultralytics' yaml (random weights), conv+bn fused, fp16, forward
  of `--yolo-batches` random 640x640 images (box decoding included, NMS not); images/s of the best batch.
- `fused`: `actors.fused.FusedLookbookModels` (detect, embed, describe) called directly in a loop, as
  `bench.pipeline`'s floor does, with conf/gpu.yaml's batch size, on `--images` rows cycling over `--jpegs`
  generated photo-like JPEGs of 1, 2, 3 and 4 MP (`bench.decode.scene_jpeg`), read and decoded
  (`actors.decoder.decode_images`) by `--decode-workers` threads or processes ahead of the actor, and
  with each of `--fused-calls` (1 and 2) batches in the actor at once: that many copies of the actor, each
  called on its own thread, as an actor with `pool.calls_per_actor` runs (does one batch's host work
  overlap the other's forward on the GPU?). Models: a
  full-size SigLIP-B/16 (both towers, text 64 tokens, random weights, written to a temporary folder) and
  YOLOv8n from its yaml at 640 px (random weights; `detector.min_score` 0, so each image gives up to
  `detector.max_crops` crops, and its scene row: the most embedding work per image). images/s = rows / wall
  seconds of the loop; crops/s counts crops, not scene rows.
  Then the same rows with `decode.device` set to the device: the actor reads its rows and decodes the JPEGs
  in batches with torchvision (nvJPEG on a GPU), no decode workers (`fused_device_decode_images_per_s`).
- `faiss`: with a GPU build of faiss, the index `core.index_plan` picks for 1e6 x 768 float16 embeddings
  (IVF4096,SQfp16), trained on its training sample, filled, then `--queries` searches at nprobe 64, k 20.

Packages the machine lacks (ultralytics, omegaconf, faiss) come from `--wheels` (bench/wheels, git-ignored):
every wheel there with a module that is not importable is unpacked into the work folder and put on sys.path.
Fill it with (about 50 MB; the faiss wheel needs the nvidia-*-cu12 packages of a CUDA 12 torch):

    pip download --no-deps -d bench/wheels ultralytics==8.4.190 omegaconf==2.4.0 nvidia-ml-py==13.615.71
    pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \\
        -d bench/wheels faiss-gpu-cu12==1.14.1.post1

A part whose packages are still missing prints `skip <part>: <reason>` and the run goes on; a part that
raises prints `failed <part>: ...` and the run exits 1 after the summary. Nothing touches the network (YOLO_OFFLINE,
HF_HUB_OFFLINE). `--dry-run`: tiny sizes on CPU, seconds on 2 cores (tests/test_bench_gpu.py).

The last line printed is `gpu: device=... siglip_crops_per_s=... siglip_batch=... yolov8n_images_per_s=...
yolov8s_images_per_s=... fused_device_decode_images_per_s=... fused_images_per_s=... fused_crops_per_s=...
faiss_queries_per_s=... total_s=...
skipped=...` (`failed=...` too when a part raised).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import itertools
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
import zipfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PARTS = ("siglip", "yolo", "fused", "faiss")
OFFLINE = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false", "YOLO_VERBOSE": "false", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}  # fmt: skip
# google/siglip-base-patch16-224, as in its config.json: the image tower and the text tower.
SIGLIP_B16_VISION = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                     "num_attention_heads": 12, "image_size": 224, "patch_size": 16}  # fmt: skip
SIGLIP_B16_TEXT = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                   "num_attention_heads": 12, "max_position_embeddings": 64}  # fmt: skip
TINY_VISION = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
               "image_size": 64, "patch_size": 16}  # fmt: skip
FAISS_K = 20  # scoring.top_k
FAISS_NPROBE = 64


class Skip(Exception):
    """A part that cannot run here (a package or the GPU support it needs is missing); the message says why."""


# --- packages carried as wheels -------------------------------------------------------------------


def wheel_modules(wheel: Path) -> set[str]:
    """Top-level modules and packages of a wheel."""
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
    return {t.removesuffix(".py") for t in tops if t.removesuffix(".py").isidentifier()}  # not .dist-info, .libs


def unpack_wheels(folder: Path, into: Path) -> list[str]:
    """Unpack every wheel in `folder` with a module that is not importable into `into/<wheel>` and append that
    folder to sys.path, after the installed packages (a wheel is a zip of site-packages; unpacked, package
    data files and compiled extensions load too). Returns the wheel file names used."""
    used = []
    for wheel in sorted(folder.glob("*.whl")) if folder.is_dir() else []:
        if all(importlib.util.find_spec(m) for m in wheel_modules(wheel)):
            continue
        target = into / wheel.stem
        if not target.is_dir():
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(target)
        sys.path.append(str(target))
        used.append(wheel.name)
    importlib.invalidate_caches()
    return used


def need(module: str, part: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise Skip(f"{module} is not installed and no wheel in --wheels provides it ({part} needs it)")


# --- timing ---------------------------------------------------------------------------------------


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def rate(step: Callable[[], object], items: int, device: str, seconds: float, warmup: int = 2) -> float:
    """Items/s of `step` (which handles `items` items), repeated for at least `seconds` and 3 times."""
    for _ in range(warmup):
        step()
    sync(device)
    start, runs = time.perf_counter(), 0
    while runs < 3 or time.perf_counter() - start < seconds:
        step()
        runs += 1
        if runs % 4 == 0:  # the GPU runs ahead of the host: synchronise now and then to read the clock
            sync(device)
    sync(device)
    return items * runs / (time.perf_counter() - start)


def sweep(name: str, build_input: Callable[[int], object], forward: Callable, batches: list[int], device: str,
          seconds: float) -> dict[int, float]:  # fmt: skip
    """Items/s of `forward(build_input(batch))` per batch size, printed as table rows; stops at an OOM."""
    import torch

    rates = {}
    for batch in batches:
        try:
            inputs = build_input(batch)
            with torch.inference_mode():
                rates[batch] = rate(lambda inputs=inputs: forward(inputs), batch, device, seconds)
        except torch.cuda.OutOfMemoryError:
            print(f"{name:10s} {batch:6d} {'out of memory':>12s}", flush=True)
            break
        finally:
            inputs = None
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        print(f"{name:10s} {batch:6d} {rates[batch]:12.1f}", flush=True)
    if not rates:
        raise RuntimeError(f"{name}: no batch size fitted in memory")
    return rates


# --- parts ----------------------------------------------------------------------------------------


def part_siglip(args: argparse.Namespace, device: str, workdir: Path) -> dict:
    import torch
    from transformers import SiglipVisionConfig, SiglipVisionModel

    config = SiglipVisionConfig(**(TINY_VISION if args.dry_run else SIGLIP_B16_VISION))
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = SiglipVisionModel(config).to(dtype).eval()
    side = config.image_size
    print(f"SigLIP image tower: width {config.hidden_size}, {config.num_hidden_layers} layers, {side} px, {dtype}")
    print(f"{'model':10s} {'batch':>6s} {'crops/s':>12s}")
    rates = sweep(
        "siglip",
        lambda b: torch.randn(b, 3, side, side, device=device, dtype=dtype),
        lambda pixels: model(pixel_values=pixels).pooler_output,
        args.siglip_batches,
        device,
        args.seconds,
    )
    best = max(rates, key=rates.get)
    return {"siglip_crops_per_s": round(rates[best], 1), "siglip_batch": best}


def yolo_yaml(workdir: Path, name: str) -> Path:
    """`name`.yaml (e.g. yolov8n) in `workdir`: ultralytics' architecture file under the name that selects
    its scale (a local path: core.models refuses bare names, which ultralytics would download)."""
    import ultralytics

    target = workdir / f"{name}.yaml"
    source = Path(ultralytics.__file__).parent / "cfg" / "models" / "v8" / "yolov8.yaml"
    shutil.copyfile(source, target)
    return target


def part_yolo(args: argparse.Namespace, device: str, workdir: Path) -> dict:
    need("ultralytics", "yolo")
    import torch
    from ultralytics import YOLO

    half = device.startswith("cuda")
    side = args.yolo_size
    print(f"YOLOv8 forward at {side} px, {'fp16' if half else 'fp32'}, conv+bn fused, no NMS")
    print(f"{'model':10s} {'batch':>6s} {'images/s':>12s}")
    figures = {}
    for name in args.yolo_models:
        model = YOLO(str(yolo_yaml(workdir, name)), task="detect").model.fuse(verbose=False).to(device).eval()
        model = model.half() if half else model
        dtype = torch.float16 if half else torch.float32
        rates = sweep(
            name,
            lambda b, dtype=dtype: torch.rand(b, 3, side, side, device=device, dtype=dtype),
            model,
            args.yolo_batches,
            device,
            args.seconds,
        )
        best = max(rates, key=rates.get)
        figures |= {f"{name}_images_per_s": round(rates[best], 1), f"{name}_batch": best}
        del model
    return figures


def siglip_folder(folder: Path, tiny: bool) -> Path:
    """A SigLIP checkpoint folder the embedder loads: the tiny one of training.tiny_models, or with `tiny`
    false the same tokenizer (64 tokens) and a 224 px processor around random SigLIP-B/16 weights (bf16)."""
    import torch
    from transformers import AutoTokenizer, SiglipConfig, SiglipImageProcessor, SiglipModel

    from core.config import VOCAB_PATH
    from core.vocab import load_vocab, vocabulary_words
    from training.tiny_models import build_tiny_siglip

    build_tiny_siglip(folder, vocabulary_words(load_vocab(VOCAB_PATH)), seed=0)
    if tiny:
        return folder
    text = SiglipConfig.from_pretrained(folder).text_config
    ids = {k: getattr(text, k) for k in ("vocab_size", "pad_token_id", "eos_token_id", "bos_token_id")}
    config = SiglipConfig(text_config={**ids, **SIGLIP_B16_TEXT}, vision_config=SIGLIP_B16_VISION)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.model_max_length = SIGLIP_B16_TEXT["max_position_embeddings"]
    tokenizer.save_pretrained(folder)
    side = SIGLIP_B16_VISION["image_size"]
    SiglipImageProcessor(size={"height": side, "width": side}).save_pretrained(folder)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        SiglipModel(config).to(torch.bfloat16).save_pretrained(folder)
    return folder


def _extend_path(paths: list[str]) -> None:
    """Initializer of spawned workers: the parent's sys.path (the unpacked wheels included)."""
    sys.path.extend(p for p in paths if p not in sys.path)


def spawn_pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(workers, get_context("spawn"), initializer=_extend_path, initargs=(list(sys.path),))


def _scene(path: str, width: int, height: int, seed: int) -> str:
    from bench.decode import scene_jpeg

    Path(path).write_bytes(scene_jpeg(width, height, seed))
    return path


def make_jpegs(folder: Path, count: int, megapixels: list[float], workers: int) -> list[str]:
    """`count` seeded 3:2 JPEGs cycling over `megapixels`, landscape and portrait in turn, written in parallel."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = []
    for k in range(count):
        mp = megapixels[k % len(megapixels)]
        long, short = int(round((mp * 1e6 * 1.5) ** 0.5)), int(round((mp * 1e6 / 1.5) ** 0.5))
        width, height = (long, short) if k % 2 == 0 else (short, long)
        jobs.append((str(folder / f"scene-{k:04d}.jpg"), width, height, k))
    if workers <= 1 or count <= 4:
        return [_scene(*job) for job in jobs]
    with spawn_pool(min(workers, count)) as pool:
        return list(pool.map(_scene, *zip(*jobs)))


def _decode_chunk(chunk: dict, decode_cfg, storage) -> dict:
    from actors.decoder import decode_images

    return decode_images(chunk, decode_cfg, storage)


def decoded_chunks(pool: Executor, rows: dict, chunk: int, decode_cfg, storage, ahead: int) -> Iterator[dict]:
    """`rows` decoded `chunk` rows per task on `pool`, in order, at most `ahead` tasks in flight."""
    n = len(rows["uri"])
    starts = iter(range(0, n, chunk))
    pending = deque()
    while True:
        while len(pending) < ahead and (start := next(starts, None)) is not None:
            part = {k: v[start : start + chunk] for k, v in rows.items()}
            pending.append(pool.submit(_decode_chunk, part, decode_cfg, storage))
        if not pending:
            return
        yield pending.popleft().result()


def batched(chunks: Iterator[dict], size: int) -> Iterator[dict]:
    """Decoded chunks regrouped into batches of at least `size` rows (the last one may be smaller)."""
    from core.batches import concat

    pending: list[dict] = []
    for part in chunks:
        pending.append(part)
        if sum(len(p["uri"]) for p in pending) >= size:
            yield concat(pending)
            pending = []
    if pending:
        yield concat(pending)


def run_calls(copies: list, batches: Iterator[dict], reasons_of: Callable[[dict], np.ndarray]) -> tuple:
    """Each of `copies` (fused actors) called on its own thread with the next of `batches` until
    they run out, as an actor with `pool.calls_per_actor` = len(copies) runs; returns the crop
    reasons of every output row and the seconds the threads waited for batches, summed."""
    lock, reasons, waited = threading.Lock(), [], [0.0]

    def call_until_done(actor) -> None:
        while True:
            tick = time.perf_counter()
            with lock:
                batch = next(batches, None)
                waited[0] += time.perf_counter() - tick
            if batch is None:
                return
            out = reasons_of(actor(batch))
            with lock:
                reasons.append(out)

    with ThreadPoolExecutor(len(copies)) as threads:
        for done in [threads.submit(call_until_done, actor) for actor in copies]:
            done.result()
    return np.concatenate(reasons), waited[0]


def part_fused(args: argparse.Namespace, device: str, workdir: Path) -> dict:
    need("omegaconf", "fused (core.config)")
    need("ultralytics", "fused (the detector)")
    from actors.fused import FusedLookbookModels
    from core.batches import concat
    from core.config import CONF_DIR, load_config
    from core.schemas import REASON, SCENE_CLASS
    from core.steps import StepTimer

    crop_reasons = lambda out: out[REASON][out["det_class"] != SCENE_CLASS]  # noqa: E731  (scene rows are no crops)
    started = time.perf_counter()
    megapixels = [0.02, 0.05] if args.dry_run else [1.0, 2.0, 3.0, 4.0]
    jpegs = make_jpegs(workdir / "jpegs", args.jpegs, megapixels, max(args.decode_workers))
    generated_s = time.perf_counter() - started
    siglip = siglip_folder(workdir / "siglip", tiny=args.dry_run)
    overrides = [
        str(CONF_DIR / "gpu.yaml"),
        "lookbook=unused", "garments=unused", "output=unused",  # the actor reads none of them
        f"storage.allowed_local_roots=[{workdir / 'jpegs'}]",
        f"embedder.model.spec={siglip}", f"detector.model.spec={yolo_yaml(workdir, 'yolov8n')}",
        "detector.model.sha256=null", "detector.min_score=0.0", f"detector.image_size={args.yolo_size}",
        *(f"{role}.device={device}" for role in ("detector", "embedder", "captioner")),
    ]  # fmt: skip
    if args.fused_batch:
        overrides.append(f"fusion.pool.batch_size={args.fused_batch}")
    cfg = load_config(overrides)
    batch_size = cfg.fusion.pool.batch_size
    chunk = cfg.decode.batch_size if batch_size % cfg.decode.batch_size == 0 else batch_size
    make_actor = lambda: FusedLookbookModels(cfg.detector, cfg.embedder, cfg.captioner, cfg.storage, cfg.vocab)  # noqa: E731
    copies = [make_actor()]
    ids = np.array([f"img-{k:06d}" for k in range(args.images)], dtype=object)
    rows = {"image_id": ids, "uri": np.array([jpegs[k % len(jpegs)] for k in range(args.images)], dtype=object)}
    warm = {k: v[:batch_size] for k, v in rows.items()}
    print(f"fused actor: batch {batch_size}, {len(jpegs)} JPEGs of {megapixels} MP cycled over {args.images} rows,"
          f" decode {chunk} rows per task, max_side {cfg.decode.max_side}, detector at"
          f" {cfg.detector.image_size} px (JPEGs generated in {generated_s:.1f} s)")  # fmt: skip
    print(f"{'workers':>7s} {'calls':>5s} {'mode':>7s} {'images':>7s} {'crops':>7s} {'seconds':>8s} {'images/s':>9s} "
          f"{'crops/s':>9s} {'waiting':>8s}  actor seconds by step")  # fmt: skip
    figures = {}
    for workers, calls in itertools.product(args.decode_workers, args.fused_calls):
        while len(copies) < calls:
            copies.append(make_actor())
        if args.decode_mode == "process":
            pool = spawn_pool(workers)
        else:
            pool = ThreadPoolExecutor(workers)
        with pool:
            for actor in copies[:calls]:
                actor(concat(list(decoded_chunks(pool, warm, chunk, cfg.decode, cfg.storage, 2 * workers))))
                actor.timer.take()
            sync(device)
            batches = batched(decoded_chunks(pool, rows, chunk, cfg.decode, cfg.storage, 2 * workers), batch_size)
            start = time.perf_counter()
            reasons, waiting = run_calls(copies[:calls], batches, crop_reasons)
            sync(device)
            seconds = time.perf_counter() - start
        crops, quarantined = int((reasons == "").sum()), int((reasons != "").sum())
        if quarantined:
            raise RuntimeError(f"{quarantined} crop rows were quarantined: the generated JPEGs should all decode")
        steps = StepTimer()
        for actor in copies[:calls]:
            for step, step_s in actor.timer.take().items():
                steps.add(step, step_s)
        by_step = ", ".join(f"{k} {v:.1f}" for k, v in steps.take().items())
        images_per_s, crops_per_s = args.images / seconds, crops / seconds
        print(f"{workers:7d} {calls:5d} {args.decode_mode:>7s} {args.images:7d} {crops:7d} {seconds:8.2f} "
              f"{images_per_s:9.1f} {crops_per_s:9.1f} {waiting:8.2f}  {by_step}", flush=True)  # fmt: skip
        figures[workers, calls] = {
            "images_per_s": images_per_s,
            "crops_per_s": crops_per_s,
            "crops_per_image": crops / args.images,
        }
    print("calls: batches in the actor at once, on as many threads, each with its own copy of the models "
          "(pool.calls_per_actor); waiting: seconds the calls waited for decoded images, summed over them "
          "(decode is the bottleneck when it is large)")  # fmt: skip
    best = max(figures, key=lambda w: figures[w]["images_per_s"])
    on_device = device_decode_rate(cfg, rows, batch_size, device)
    print(f"{0:7d} {1:5d} {'device':>7s} {args.images:7d} {'':7s} {args.images / on_device:8.2f} {on_device:9.1f}"
          f"  (decode.device={device}: JPEGs decoded in the actor, batched, by torchvision)")  # fmt: skip
    return {
        "fused_device_decode_images_per_s": round(on_device, 1),
        "fused_images_per_s": round(figures[best]["images_per_s"], 1),
        "fused_crops_per_s": round(figures[best]["crops_per_s"], 1),
        "fused_crops_per_image": round(figures[best]["crops_per_image"], 2),
        "fused_decode_workers": best[0],
        "fused_calls": best[1],
        "fused_batch": batch_size,
    }


def device_decode_rate(cfg, rows: dict, batch_size: int, device: str) -> float:
    """Images/s of the fused actor reading and decoding its rows itself with `decode.device`
    (`actors.decoder.decode_on_device`), with no decode workers."""
    from dataclasses import replace

    from actors.fused import FusedLookbookModels

    decode = replace(cfg.decode, device=device)
    actor = FusedLookbookModels(cfg.detector, cfg.embedder, cfg.captioner, cfg.storage, cfg.vocab, decode=decode)
    batches = [{k: v[i : i + batch_size] for k, v in rows.items()} for i in range(0, len(rows["uri"]), batch_size)]
    actor({k: v.copy() for k, v in batches[0].items()})  # warm-up
    sync(device)
    start = time.perf_counter()
    for batch in batches:
        actor({k: v.copy() for k, v in batch.items()})
    sync(device)
    return len(rows["uri"]) / (time.perf_counter() - start)


def part_faiss(args: argparse.Namespace, device: str, workdir: Path) -> dict:
    import torch

    need("faiss", "faiss")
    try:
        import faiss

        from core import index as faiss_index
    except ImportError as exc:
        raise Skip(
            f"faiss does not load ({type(exc).__name__}: {exc}); the faiss-gpu-cu12 wheel needs pip's "
            "nvidia-cuda-runtime-cu12 and nvidia-cublas-cu12 (which a CUDA 12 build of torch brings)"
        ) from exc
    from core.index_plan import factory_candidates, ivf_lists, train_rows

    gpus = faiss_index.gpus_visible()
    if not args.dry_run and gpus == 0:
        raise Skip(f"faiss {faiss.__version__} has no GPU support here (a CPU build, or no CUDA 12 runtime for it)")
    n, dim = (2_000, 64) if args.dry_run else (1_000_000, 768)
    factory = f"IVF{ivf_lists(n)},SQfp16" if args.dry_run else factory_candidates(n, dim, "float16")[0]
    generator = torch.Generator(device=device).manual_seed(0)
    data = torch.nn.functional.normalize(torch.randn(n, dim, device=device, generator=generator), dim=1)
    vectors = data.half().float().cpu().numpy()  # what the crops Parquet stores: float16 unit vectors
    del data
    sample = vectors[np.random.default_rng(0).choice(n, train_rows(ivf_lists(n), n, 100_000), replace=False)]
    start = time.perf_counter()
    template = faiss_index.train_template(sample, factory, "auto", nprobe=FAISS_NPROBE)  # k-means on the GPU
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    index = faiss_index.add(faiss_index.from_template(template, "auto"), vectors, np.arange(n, dtype=np.int64))
    add_s = time.perf_counter() - start
    queries = vectors[: min(args.queries, n // 10)]
    index.search(queries[:16], FAISS_K)
    start = time.perf_counter()
    index.search(queries, FAISS_K)
    search_s = time.perf_counter() - start
    where = "GPU" if gpus else "CPU"
    print(f"faiss {faiss.__version__} on {where}: {factory}, {n} x {dim}, trained on {len(sample)} rows")
    print(f"{'train s':>8s} {'add s':>8s} {'queries':>8s} {'queries/s':>10s}  (nprobe {FAISS_NPROBE}, k {FAISS_K})")
    print(f"{train_s:8.2f} {add_s:8.2f} {len(queries):8d} {len(queries) / search_s:10.1f}")
    return {
        "faiss_factory": factory.replace(",", "+"),
        "faiss_rows": n,
        "faiss_on": where,
        "faiss_train_s": round(train_s, 2),
        "faiss_add_s": round(add_s, 2),
        "faiss_queries_per_s": round(len(queries) / search_s, 1),
    }


RUNNERS = {"siglip": part_siglip, "yolo": part_yolo, "fused": part_fused, "faiss": part_faiss}


# --- driver ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on CPU: checks the script, measures nothing")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--wheels", type=Path, default=REPO / "bench" / "wheels", help="carried wheels (*.whl)")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one, removed after)")
    parser.add_argument("--seconds", type=float, help="timed seconds per batch size (default 2; dry run 0)")
    parser.add_argument("--siglip-batches", type=int, nargs="+")
    parser.add_argument("--yolo-models", nargs="+", default=["yolov8n", "yolov8s"])
    parser.add_argument("--yolo-batches", type=int, nargs="+")
    parser.add_argument("--yolo-size", type=int, help="detector input side, px (default 640; dry run 64)")
    parser.add_argument("--images", type=int, help="rows through the fused actor (default 4096; dry run 8)")
    parser.add_argument("--jpegs", type=int, help="distinct generated JPEGs (default 64; dry run 4)")
    parser.add_argument("--fused-batch", type=int, help="rows per actor call (default conf/gpu.yaml's; dry run 4)")
    parser.add_argument("--decode-workers", type=int, nargs="+", help="decode workers, one run each (default: CPUs)")
    parser.add_argument("--decode-mode", choices=("thread", "process"), default="thread")
    parser.add_argument("--fused-calls", type=int, nargs="+", default=[1, 2], help="pool.calls_per_actor, one run each")
    parser.add_argument("--queries", type=int, default=10_000, help="faiss search queries")
    args = parser.parse_args(argv)
    full = {"seconds": 2.0, "siglip_batches": [64, 128, 256, 512], "yolo_batches": [16, 32, 64], "yolo_size": 640,
            "images": 4096, "jpegs": 64, "fused_batch": None, "decode_workers": [os.cpu_count() or 1]}  # fmt: skip
    tiny = {"seconds": 0.0, "siglip_batches": [2, 4], "yolo_batches": [2], "yolo_size": 64, "images": 8, "jpegs": 4,
            "fused_batch": 4, "decode_workers": [2]}  # fmt: skip
    for key, value in (tiny if args.dry_run else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> dict[str, object]:
    began = time.perf_counter()
    args = parse_args(argv)
    for key, value in OFFLINE.items():
        os.environ.setdefault(key, value)
    import torch

    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench.gpu: no CUDA device is visible (torch.cuda.is_available() is False); "
                         "--dry-run runs the tiny CPU version")  # fmt: skip
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-gpu-"))
    workdir.mkdir(parents=True, exist_ok=True)
    carried = unpack_wheels(args.wheels, workdir / "wheels")
    print(f"wheels unpacked from {args.wheels}: {', '.join(carried) or 'none needed'}")
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu (dry run: tiny sizes, figures mean nothing)"
    print(f"device: {name}; python {sys.version.split()[0]}, torch {torch.__version__}, {os.cpu_count()} CPUs")
    figures: dict[str, object] = {"device": device}
    skipped, failed = [], []
    threads = torch.get_num_threads()
    if args.dry_run:
        torch.set_num_threads(1)  # tiny models: threads only wait on each other on a busy machine
    try:
        for part in args.parts:
            print(f"\n== {part} ==", flush=True)
            started = time.perf_counter()
            try:
                figures |= RUNNERS[part](args, device, workdir)
            except Skip as exc:
                print(f"skip {part}: {exc}", flush=True)
                skipped.append(part)
            except ImportError as exc:
                print(f"skip {part}: {type(exc).__name__}: {exc}", flush=True)
                skipped.append(part)
            except Exception as exc:
                traceback.print_exc()
                print(f"failed {part}: {type(exc).__name__}: {exc}", flush=True)
                failed.append(part)
            print(f"({part}: {time.perf_counter() - started:.1f} s)", flush=True)
            if device == "cuda":
                torch.cuda.empty_cache()
    finally:
        torch.set_num_threads(threads)
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    figures["total_s"] = round(time.perf_counter() - began, 1)
    figures["skipped"] = ",".join(skipped) or "none"
    if failed:
        figures["failed"] = ",".join(failed)
    print("\ngpu: " + " ".join(f"{k}={v}" for k, v in figures.items()), flush=True)
    if failed:
        raise SystemExit(f"bench.gpu: parts failed: {', '.join(failed)}")
    return figures


if __name__ == "__main__":
    main()
