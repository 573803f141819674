"""Actor stages on CPU: the real YOLO detector on real photos, tiny SigLIP and BLIP built offline."""

from __future__ import annotations

import hashlib
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import ultralytics
from PIL import Image

from actors.captioner import CropDescriber
from actors.decoder import decode_images
from actors.detector import WHOLE_IMAGE_CLASS, CropDetector, YoloDetector, cut_crops
from actors.embedder import CropEmbedder, SiglipModelWrapper
from actors.fused import FusedLookbookModels
from core import boxes
from core.batches import objects
from core.config import DecodeConfig, ModelSpec, load_config
from core.images import NO_GARMENT, NOT_FOUND
from core.models import ModelLoadError, resolve
from core.pixels import as_array, as_tensor
from core.schemas import ERROR, OCCASION_CONFIDENCE, REASON, SCENE_CLASS
from core.steps import DECODE, FORWARD, POSTPROCESS, PREPROCESS
from core.storage import StorageConfig
from core.vocab import ATTRIBUTES, UNKNOWN

ASSETS = Path(ultralytics.__file__).parent / "assets"
STORAGE = StorageConfig(allowed_local_roots=["/"])  # the ultralytics assets and pytest folders


@pytest.fixture(scope="module")
def cfg(model_overrides):
    return load_config([*model_overrides, "lookbook=x", "garments=x", "output=x"])


def decoded_batch(uris: list[str], max_side: int = 1280) -> dict:
    batch = {"image_id": np.array([Path(u).stem for u in uris], dtype=object), "uri": np.array(uris, dtype=object)}
    return decode_images(batch, DecodeConfig(max_side=max_side), STORAGE)


@pytest.fixture(scope="module")
def detector(cfg):
    return CropDetector(replace(cfg.detector, image_size=640), STORAGE)


def test_yolo_finds_the_people_in_real_photos(detector):
    batch = decoded_batch([str(ASSETS / "bus.jpg"), str(ASSETS / "zidane.jpg")])
    found = detector.detector(list(batch["image"]))
    assert [len(xyxy) >= n for (xyxy, _, _), n in zip(found, (4, 2))] == [True, True]
    for (xyxy, scores, _), image in zip(found, batch["image"]):
        h, w = image.shape[:2]
        assert (xyxy[:, 0] >= 0).all() and (xyxy[:, 2] <= w + 1).all() and (xyxy[:, 3] <= h + 1).all()
        assert (scores >= 0.25).all()


def test_detections_do_not_depend_on_the_batch(detector):
    """ultralytics pads a batch of same-shaped images less than a mixed one (its `rect` default):
    a resumed run, batching other images together, would cut other crops."""
    bus, zidane = (decoded_batch([str(ASSETS / name)])["image"][0] for name in ("bus.jpg", "zidane.jpg"))
    alone = detector.detector([bus])[0]
    for batch in ([bus, bus], [bus, zidane]):
        for got, expected in zip(detector.detector(batch)[0], alone):
            np.testing.assert_allclose(got, expected, atol=1e-3)


def test_the_detector_keeps_the_actors_torch_threads(cfg):
    """ultralytics sets torch's threads to min(8, cores - 1) when its predictor is set up: an actor
    given one core of sixteen would run its later models on eight threads."""
    from ultralytics.utils import NUM_THREADS

    saved = torch.get_num_threads()
    actor_threads = 1 if NUM_THREADS != 1 else 2
    try:
        torch.set_num_threads(actor_threads)
        detector = CropDetector(cfg.detector, STORAGE)  # a fresh predictor, set up on the first call
        detector.detector(list(decoded_batch([str(ASSETS / "bus.jpg")])["image"]))
        assert torch.get_num_threads() == actor_threads
    finally:
        torch.set_num_threads(saved)


@pytest.mark.parametrize("size", [320, 640])
def test_letterboxing_on_the_device_gives_ultralytics_boxes(cfg, size):
    """Images are letterboxed as tensors (`actors.detector.letterbox`) instead of by ultralytics'
    cv2 LetterBox on the host: the same boxes within IoU 0.98, the same scores within 0.02."""
    detector = YoloDetector(replace(cfg.detector, image_size=size), STORAGE)
    for name in ("bus.jpg", "zidane.jpg"):
        image = decoded_batch([str(ASSETS / name)])["image"][0]
        found, scores, _ = detector([image])[0]
        host = detector.model.predict(  # ultralytics' own path: BGR arrays, letterboxed to the square size
            [image[:, :, ::-1]], imgsz=size, conf=cfg.detector.min_score, rect=False, verbose=False
        )[0]
        truth, truth_scores = host.boxes.xyxy.numpy(), host.boxes.conf.numpy()
        t, f = boxes.match_by_iou(truth, found, 0.98)
        assert len(truth) >= 2 and len(t) == len(truth) == len(found), (name, size)
        np.testing.assert_allclose(scores[f], truth_scores[t], atol=0.02)


def test_crops_cut_on_the_device_equal_pillow_thumbnails(cfg):
    """`cut_crops` (torch, antialiased bilinear) against the host path it replaces (Pillow's
    BILINEAR thumbnail): the same sizes, pixels within 0.05 levels on average, and SigLIP
    embeddings within 1e-3 cosine."""
    image = decoded_batch([str(ASSETS / "bus.jpg")])["image"][0]
    windows = [np.array(b) for b in ([10.3, 20.7, 500.2, 900.9], [100, 100, 140, 180], [0, 0, 810, 1080])]
    got = [as_array(c) for c in cut_crops(as_tensor(image, "cpu"), windows, 384)]
    expected = []
    for window in windows:
        thumbnail = Image.fromarray(boxes.crop_pixels(image, window))
        thumbnail.thumbnail((384, 384), Image.Resampling.BILINEAR)
        expected.append(np.asarray(thumbnail))
    assert [g.shape for g in got] == [e.shape for e in expected] == [(384, 214, 3), (80, 40, 3), (384, 288, 3)]
    assert all(np.abs(g.astype(int) - e).mean() < 0.05 for g, e in zip(got, expected))
    siglip = SiglipModelWrapper(cfg.embedder, STORAGE)
    cosine = (siglip.embed_images(got) * siglip.embed_images(expected)).sum(axis=1)
    assert (cosine > 0.999).all(), cosine


def test_crop_rows_keep_ids_boxes_and_pass_quarantined_rows(detector):
    batch = decoded_batch([str(ASSETS / "bus.jpg"), "/nonexistent/x.jpg"])
    out = detector(batch)
    scene = out["det_class"] == SCENE_CLASS  # the image itself, after its crops, for the describe stage
    assert out["crop_id"][scene].tolist() == ["bus:scene"]
    assert np.stack(out["box"][scene]).tolist() == [[0, 0, 810, 1080]]
    assert out["crop"][scene][0].shape == (384, 288, 3)  # the whole picture, fitted to crop_max_side
    bus = (out["image_id"] == "bus") & ~scene
    assert bus.sum() == 4  # conf: max_crops=4, the bus photo has 4+ people
    assert out["crop_id"][bus].tolist() == [f"bus:{k}" for k in range(4)]
    assert (np.diff(out["det_score"][bus]) <= 0).all()
    missing = out[REASON] == NOT_FOUND
    assert missing.sum() == 1 and out["crop"][missing][0].size == 0
    for box, crop in zip(out["box"][bus], out["crop"][bus]):
        assert max(crop.shape[:2]) <= 384
        assert 0 <= box[0] < box[2] <= 810 and 0 <= box[1] < box[3] <= 1080


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = lambda box: (box[2] - box[0]) * (box[3] - box[1])  # noqa: E731
    return w * h / (area(a) + area(b) - w * h)


def test_boxes_are_in_original_pixels_when_decoding_downscales(detector):
    full = np.stack(detector(decoded_batch([str(ASSETS / "bus.jpg")]))["box"])
    small = np.stack(detector(decoded_batch([str(ASSETS / "bus.jpg")], max_side=540))["box"])  # half size
    best = [max(iou(s, f) for f in full) for s in small]
    assert np.median(best) > 0.8, best  # the same people, in the same (original) pixel frame


def test_no_detection_policies(cfg, tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 160), (240, 240, 240)).save(blank)
    batch = decoded_batch([str(blank)])
    whole = CropDetector(cfg.detector, STORAGE)(dict(batch))
    assert whole["det_class"].tolist() == [WHOLE_IMAGE_CLASS, SCENE_CLASS] and whole[REASON].tolist() == ["", ""]
    assert whole["crop_id"].tolist() == ["blank:0", "blank:scene"]  # a whole-image crop, and the scene row
    assert np.stack(whole["box"]).tolist() == [[0, 0, 200, 160]] * 2
    skip = CropDetector(replace(cfg.detector, no_detection="skip"), STORAGE)(decoded_batch([str(blank)]))
    assert skip[REASON].tolist() == [NO_GARMENT] and skip[ERROR][0]  # no crop, so no scene row either


def test_pickled_detector_needs_a_matching_pin(cfg, tmp_path):
    storage = replace(STORAGE, model_cache=str(tmp_path / "cache"))
    unpinned = replace(cfg.detector.model, sha256=None)
    with pytest.raises(ModelLoadError, match="pin its sha256"):
        resolve("detector", unpinned, storage)
    with pytest.raises(ModelLoadError, match="does not match"):
        resolve("detector", replace(unpinned, sha256="0" * 64), storage)
    path = resolve("detector", cfg.detector.model, storage)
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == cfg.detector.model.sha256


@pytest.mark.parametrize("name", ["m.PT", "weights.bin", "model"])
def test_a_pickle_is_known_by_its_bytes_not_its_name(cfg, tmp_path, name):
    """#13, item 1: a checkpoint named m.PT skipped the pin and was unpickled."""
    original = resolve("detector", cfg.detector.model, replace(STORAGE, model_cache=str(tmp_path / "cache")))
    renamed = tmp_path / name
    renamed.write_bytes(Path(original).read_bytes())
    with pytest.raises(ModelLoadError, match="pickled checkpoint: pin its sha256"):
        resolve("detector", ModelSpec(spec=str(renamed)), STORAGE)


def test_the_loader_opens_the_very_bytes_that_were_checked(cfg, tmp_path):
    """#13, item 1: the pinned file was hashed, then reopened by the loader (swap in between)."""
    source = tmp_path / "detector.pt"
    source.write_bytes(Path(resolve("detector", cfg.detector.model, STORAGE)).read_bytes())
    storage = replace(STORAGE, model_cache=str(tmp_path / "cache"))
    path = Path(resolve("detector", replace(cfg.detector.model, spec=str(source)), storage))
    source.write_bytes(b"swapped after the check")
    assert path != source and path.is_relative_to(tmp_path / "cache")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == cfg.detector.model.sha256
    assert path.stat().st_mode & 0o077 == 0 and path.parent.stat().st_mode & 0o077 == 0  # private
    assert CropDetector(replace(cfg.detector, model=replace(cfg.detector.model, spec=str(path))), storage)


@pytest.mark.parametrize("spec", ["yolov8n.pt", "https://example.com/x.pt", "org/model"])
def test_the_detector_never_downloads_a_checkpoint(spec):
    """#13, item 1: a spec that is no local file went to ultralytics, which downloads and unpickles it."""
    with pytest.raises(ModelLoadError, match="would download and unpickle it"):
        resolve("detector", ModelSpec(spec=spec, sha256="0" * 64), STORAGE, hub=False)


def test_transformers_weights_load_only_from_safetensors(cfg, tmp_path):
    """#13, item 1: a model folder whose weights are only pickled (`pytorch_model.bin`) is refused."""
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(cfg.embedder.model.spec, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="could not be loaded"):
        CropEmbedder(replace(cfg.embedder, model=ModelSpec(spec=str(folder))), STORAGE)


def test_missing_model_error_names_the_spec(cfg):
    with pytest.raises(ModelLoadError, match="no/such-model"):
        CropEmbedder(replace(cfg.embedder, model=ModelSpec(spec="./no/such-model")), STORAGE)


def crop_batch(n: int, seed: int = 0, texts: list[str] | None = None) -> dict:
    rng = np.random.default_rng(seed)
    crops = [rng.integers(0, 255, (40 + 7 * i, 50, 3), dtype=np.uint8) for i in range(n)]
    reasons = np.array([""] * (n - 1) + ["decode_error"], dtype=object)
    crops[-1] = np.zeros((0, 0, 3), np.uint8)
    batch = {"crop": objects(crops), REASON: reasons, ERROR: reasons.copy()}
    if texts is not None:
        batch["text"] = np.array(texts, dtype=object)
    return batch


def test_embedder_gives_unit_vectors_deterministically(cfg):
    embedder = CropEmbedder(cfg.embedder, STORAGE)
    first = embedder(crop_batch(5))["embedding"]
    again = CropEmbedder(cfg.embedder, STORAGE)(crop_batch(5))["embedding"]
    np.testing.assert_allclose(np.linalg.norm(first[:4], axis=1), 1.0, rtol=1e-5)
    assert (first[4] == 0).all()  # the quarantined row
    np.testing.assert_allclose(first, again, atol=1e-6)
    assert not np.allclose(first[0], first[1])


def test_zero_shot_describer(cfg, vocab):
    batch = CropEmbedder(cfg.embedder, STORAGE)(crop_batch(4, texts=["", "a red dress", "", ""]))
    out = CropDescriber(cfg.captioner, cfg.embedder, STORAGE, vocab)(batch)
    for i in (0, 2):
        attributes = {a: out[a][i] for a in ATTRIBUTES}
        assert all(attributes[a] in vocab[a] for a in ATTRIBUTES)
        assert out["caption"][i] == cfg.captioner.caption_template.format(**attributes)
    assert out["caption"][1] == "a red dress"  # manifest text wins for the caption
    assert out["caption"][3] == "" and out["category"][3] == UNKNOWN
    np.testing.assert_allclose(np.linalg.norm(out["caption_embedding"][:3], axis=1), 1.0, rtol=1e-5)
    occasions = len(vocab["occasion"])  # a probability among them: above chance for the chosen one
    assert ((out[OCCASION_CONFIDENCE][:3] >= 1 / occasions) & (out[OCCASION_CONFIDENCE][:3] <= 1)).all()
    assert out[OCCASION_CONFIDENCE][3] == 0.0


def test_occasion_confidence_is_the_softmax_of_the_chosen_occasion(cfg, vocab):
    describer = CropDescriber(cfg.captioner, cfg.embedder, STORAGE, vocab)
    embeddings = CropEmbedder(cfg.embedder, STORAGE)(crop_batch(4))["embedding"][:3]
    tagger = describer.tagger
    logits = tagger.logit_scale * embeddings @ tagger.prompt_embeddings["occasion"].T
    expected = np.exp(logits).max(axis=1) / np.exp(logits).sum(axis=1)
    np.testing.assert_allclose(tagger.confidence(embeddings, "occasion"), expected, rtol=1e-5)
    chosen = [vocab["occasion"].index(a["occasion"]) for a in tagger(embeddings)]
    assert chosen == logits.argmax(axis=1).tolist()


def test_generative_describer(cfg, vocab):
    generative = replace(cfg.captioner, kind="generative", max_new_tokens=8, use_manifest_text=False)
    batch = CropEmbedder(cfg.embedder, STORAGE)(crop_batch(3))
    out = CropDescriber(generative, cfg.embedder, STORAGE, vocab)(batch)
    assert all(isinstance(c, str) and c for c in out["caption"][:2])
    for attr in ATTRIBUTES:
        assert all(v in (*vocab[attr], UNKNOWN) for v in out[attr])
    assert out[OCCASION_CONFIDENCE].tolist() == [float(o != UNKNOWN) for o in out["occasion"][:2]] + [0.0]
    assert out["caption_embedding"].shape == batch["embedding"].shape


def test_fused_models_equal_the_separate_stages(cfg, detector, vocab):
    batch = decoded_batch([str(ASSETS / "bus.jpg"), str(ASSETS / "zidane.jpg"), "/nonexistent/x.jpg"])
    fused_detector = replace(cfg.detector, image_size=640)
    fused = FusedLookbookModels(fused_detector, cfg.embedder, cfg.captioner, STORAGE, vocab)
    assert fused.describe.siglip is fused.embed.model  # one SigLIP in the process
    got = fused({k: v.copy() for k, v in batch.items()})
    separate = CropEmbedder(cfg.embedder, STORAGE)(detector({k: v.copy() for k, v in batch.items()}))
    expected = CropDescriber(cfg.captioner, cfg.embedder, STORAGE, vocab)(separate)
    assert got["crop_id"].tolist() == expected["crop_id"].tolist() and len(got["crop_id"]) >= 7
    assert got[REASON].tolist() == expected[REASON].tolist()
    for column in ("embedding", "caption_embedding"):
        np.testing.assert_allclose(got[column], expected[column], atol=1e-5)
    assert got["caption"].tolist() == expected["caption"].tolist()
    assert set(got) == set(expected) - {"crop"}  # crop pixels stay in the fused actor


def test_fused_models_with_decode_take_manifest_rows(cfg, vocab):
    uris = [str(ASSETS / "bus.jpg"), "/nonexistent/x.jpg", str(ASSETS / "zidane.jpg")]
    manifest = {"image_id": np.array([f"i{k}" for k in range(3)], dtype=object), "uri": np.array(uris, dtype=object)}
    models = (replace(cfg.detector, image_size=640), cfg.embedder, cfg.captioner, STORAGE, vocab)
    decoding = FusedLookbookModels(*models, decode=DecodeConfig())
    got = decoding({k: v.copy() for k, v in manifest.items()})
    assert set(decoding.timer.take()) == {DECODE, PREPROCESS, FORWARD, POSTPROCESS}  # its own steps, one timer
    expected = FusedLookbookModels(*models)(decode_images(manifest, DecodeConfig(), STORAGE))
    assert set(got) == set(expected) and got["crop_id"].tolist() == expected["crop_id"].tolist()
    assert got[REASON].tolist() == expected[REASON].tolist() and NOT_FOUND in got[REASON].tolist()
    np.testing.assert_allclose(got["embedding"], expected["embedding"], atol=1e-5)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_two_fused_copies_on_two_threads_give_what_one_gives(cfg, vocab, device):
    """What an actor with `pool.calls_per_actor: 2` does: two copies of the models, each called on
    its own thread at the same time, return the rows one copy returns (CUDA: from two threads)."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    roles = [replace(role, device=device) for role in (cfg.detector, cfg.embedder, cfg.captioner)]
    copies = [FusedLookbookModels(*roles, STORAGE, vocab, decode=DecodeConfig()) for _ in range(2)]
    uris = [str(ASSETS / "bus.jpg"), str(ASSETS / "zidane.jpg")]
    manifest = {"image_id": np.array(["i0", "i1"], dtype=object), "uri": np.array(uris, dtype=object)}
    expected = copies[0]({k: v.copy() for k, v in manifest.items()})
    with ThreadPoolExecutor(2) as threads:
        outs = list(threads.map(lambda i: copies[i % 2]({k: v.copy() for k, v in manifest.items()}), range(6)))
    for got in outs:
        assert got["crop_id"].tolist() == expected["crop_id"].tolist() and len(got["crop_id"]) > 2
        np.testing.assert_allclose(got["embedding"], expected["embedding"], atol=1e-5)
        assert got["caption"].tolist() == expected["caption"].tolist()


def test_decode_keeps_rows_that_arrive_quarantined():
    batch = {
        "image_id": np.array(["a", "b"], dtype=object),
        "uri": np.array([str(ASSETS / "bus.jpg")] * 2, dtype=object),
        REASON: np.array(["", "worker_crash"], dtype=object),
        ERROR: np.array(["", "killed its worker"], dtype=object),
    }
    out = decode_images(batch, DecodeConfig(), STORAGE)
    assert out[REASON].tolist() == ["", "worker_crash"] and out[ERROR].tolist() == ["", "killed its worker"]
    assert out["image"][0].shape == (1080, 810, 3) and out["image"][1].size == 0


@pytest.mark.gpu
def test_siglip_preprocessing_on_the_gpu_matches_the_cpu(cfg):
    """Crops are resized and normalised on the actor's device; on a GPU the result equals the CPU
    processor's within 0.02 (normalised units: about 2.5 of 255 levels, bilinear on another device)
    and the embeddings within 0.01 cosine."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    on_gpu = CropEmbedder(replace(cfg.embedder, device="cuda", gpu_dtype="float32"), STORAGE)
    on_cpu = CropEmbedder(replace(cfg.embedder, device="cpu"), STORAGE)
    crops = [c for c in crop_batch(5)["crop"][:4]]
    pixels = {
        name: e.model.processor(images=crops, return_tensors="pt", device=e.model.device)["pixel_values"]
        for name, e in (("gpu", on_gpu), ("cpu", on_cpu))
    }
    assert pixels["gpu"].device.type == "cuda"
    np.testing.assert_allclose(pixels["gpu"].cpu().numpy(), pixels["cpu"].numpy(), atol=0.02)
    cosine = (on_gpu(crop_batch(5))["embedding"][:4] * on_cpu(crop_batch(5))["embedding"][:4]).sum(axis=1)
    assert (cosine > 0.99).all()


@pytest.mark.gpu
def test_detection_and_crops_on_the_gpu_match_the_cpu(cfg):
    """The detector's letterbox, YOLO and crops on CUDA: the same boxes (IoU 0.98) and crops
    (mean error under 1 level) as on the CPU."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    batch = decoded_batch([str(ASSETS / "bus.jpg"), str(ASSETS / "zidane.jpg")])
    on_gpu = CropDetector(replace(cfg.detector, device="cuda", half=False, image_size=640), STORAGE)(dict(batch))
    on_cpu = CropDetector(replace(cfg.detector, device="cpu", image_size=640), STORAGE)(dict(batch))
    assert on_gpu["crop_id"].tolist() == on_cpu["crop_id"].tolist()
    for a, b, crop_a, crop_b in zip(on_gpu["box"], on_cpu["box"], on_gpu["crop"], on_cpu["crop"]):
        assert boxes.iou(a, b)[0, 0] > 0.98
        if crop_a.shape == crop_b.shape:
            assert np.abs(crop_a.astype(int) - crop_b).mean() < 1.0
