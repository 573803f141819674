"""Tiny random SigLIP / BLIP folders load with the production `from_pretrained` calls and run."""

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    BlipForConditionalGeneration,
    BlipProcessor,
    SiglipImageProcessor,
    SiglipModel,
)

from actors.embedder import SiglipModelWrapper
from core.config import EmbedderConfig, ModelSpec
from core.storage import StorageConfig
from core.vocab import vocabulary_words
from jobs.make_tiny_models import main
from training.tiny_models import BLIP_DIR, SIGLIP_DIR, SIGLIP_TEXT_LENGTH, build_tiny_blip, build_tiny_siglip

VOCAB_YAML = Path(__file__).resolve().parents[1] / "conf" / "vocab.yaml"
VOCAB = OmegaConf.to_container(OmegaConf.load(VOCAB_YAML))
WORDS = vocabulary_words(VOCAB)
VALUES = [value for values in VOCAB.values() for value in values]
DIM = 64
IMAGE_SIZE = 64


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("models")
    return {
        "siglip": build_tiny_siglip(out / "siglip", WORDS, seed=0, image_size=IMAGE_SIZE, dim=DIM),
        "blip": build_tiny_blip(out / "blip", WORDS, seed=0, image_size=IMAGE_SIZE),
    }


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (48 + 8 * i, 80, 3), dtype=np.uint8)) for i in range(n)]


def test_siglip_features_have_shape_n_by_dim(folders: dict[str, Path]) -> None:
    model = AutoModel.from_pretrained(folders["siglip"])
    tokenizer = AutoTokenizer.from_pretrained(folders["siglip"])
    image_processor = AutoImageProcessor.from_pretrained(folders["siglip"])
    assert isinstance(model, SiglipModel)
    assert isinstance(image_processor, SiglipImageProcessor)

    pixels = image_processor(images=_images(3), return_tensors="pt")["pixel_values"]
    texts = ["a photo of a red striped t-shirt, short-sleeved sleeves", "a navy dress"]
    tokens = tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt")
    with torch.no_grad():
        image_features = model.get_image_features(pixel_values=pixels).pooler_output
        text_features = model.get_text_features(input_ids=tokens["input_ids"]).pooler_output
        logits = model(pixel_values=pixels, **tokens).logits_per_image

    assert pixels.shape == (3, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert tokens["input_ids"].shape == (2, SIGLIP_TEXT_LENGTH)
    assert image_features.shape == (3, DIM)
    assert text_features.shape == (2, DIM)
    assert logits.shape == (3, 2)
    assert torch.isfinite(image_features).all() and torch.isfinite(text_features).all()


def test_siglip_text_length_sets_padding_and_text_positions(tmp_path: Path) -> None:
    folder = build_tiny_siglip(tmp_path, WORDS, seed=0, image_size=IMAGE_SIZE, dim=DIM, text_length=8)
    siglip = SiglipModelWrapper(EmbedderConfig(model=ModelSpec(spec=str(folder))), StorageConfig())
    assert siglip.model.config.text_config.max_position_embeddings == 8
    assert siglip.tokenizer(["a red dress"], padding="max_length")["input_ids"][0][-1] == siglip.tokenizer.pad_token_id
    long = "a red striped dress with long sleeves for a formal evening party"  # 13 tokens: truncated to 8
    vectors = siglip.embed_texts(["a red dress", long])
    assert vectors.shape == (2, DIM) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_siglip_tokenizer_round_trips_vocabulary(folders: dict[str, Path]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(folders["siglip"])
    for word in WORDS:
        ids = tokenizer(word)["input_ids"]
        assert tokenizer.unk_token_id not in ids, word
        assert tokenizer.decode(ids, skip_special_tokens=True) == word
    assert len(tokenizer("t-shirt")["input_ids"]) == 2  # the word and "</s>"


def test_blip_generates_captions(folders: dict[str, Path]) -> None:
    processor = AutoProcessor.from_pretrained(folders["blip"])
    model = AutoModelForImageTextToText.from_pretrained(folders["blip"])
    assert isinstance(processor, BlipProcessor)
    assert isinstance(model, BlipForConditionalGeneration)

    n = 3
    inputs = processor(images=_images(n), text=["a photo of"] * n, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=12)
    captions = processor.batch_decode(output, skip_special_tokens=True)

    assert inputs["pixel_values"].shape == (n, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert output.shape[0] == n and output.shape[1] <= inputs["input_ids"].shape[1] - 1 + 12
    assert (output[:, 0] == processor.tokenizer.bos_token_id).all()
    assert len(captions) == n and all(caption.startswith("a photo of") for caption in captions)


def test_blip_tokenizer_round_trips_vocabulary(folders: dict[str, Path]) -> None:
    tokenizer = AutoProcessor.from_pretrained(folders["blip"]).tokenizer
    for word in WORDS:
        ids = tokenizer(word)["input_ids"]
        assert tokenizer.unk_token_id not in ids, word
        assert tokenizer.decode(ids, skip_special_tokens=True) == " - ".join(word.split("-"))


@pytest.mark.parametrize("build", [build_tiny_siglip, build_tiny_blip])
def test_weights_are_a_function_of_the_seed(build, tmp_path: Path) -> None:
    def weights(name: str, seed: int) -> bytes:
        return (build(tmp_path / name, WORDS, seed=seed) / "model.safetensors").read_bytes()

    first = weights("a", seed=0)
    assert weights("b", seed=0) == first
    assert weights("c", seed=1) != first


@pytest.mark.parametrize("build", [build_tiny_siglip, build_tiny_blip])
def test_image_size_must_be_a_patch_multiple(build, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple"):
        build(tmp_path, WORDS, image_size=60)


def test_vocabulary_words_keep_hyphenated_values_and_parts() -> None:
    assert {"t-shirt", "t", "shirt", "polka-dot", "polka", "dot", "a", "photo"} <= set(WORDS)
    assert set(VALUES) <= set(WORDS)
    assert len(WORDS) == len(set(WORDS))


def test_main_writes_both_folders_under_5_mb(tmp_path: Path) -> None:
    main(["--out", str(tmp_path), "--vocab", str(VOCAB_YAML), "--seed", "0"])
    for name in (SIGLIP_DIR, BLIP_DIR):
        folder = tmp_path / name
        assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
        assert sum(f.stat().st_size for f in folder.iterdir()) < 5_000_000
