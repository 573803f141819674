"""Tiny, randomly initialised SigLIP and BLIP checkpoints in Hugging Face folder format.

The folders load with the same calls production uses for `google/siglip-base-patch16-224` and
`Salesforce/blip-image-captioning-base` (`AutoModel`, `AutoTokenizer`, `AutoImageProcessor`,
`AutoProcessor`, `AutoModelForImageTextToText`), so loading and inference code runs offline.
Weights are random: outputs are a deterministic function of the seed and carry no meaning.
Each folder is well under 5 MB and builds in well under a second on CPU.
"""

import copy
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessor,
    BlipProcessor,
    PreTrainedTokenizerFast,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
)

SIGLIP_DIR = "siglip-tiny"  # folder names under the output of `python -m jobs.make_tiny_models`
BLIP_DIR = "blip-tiny"

PATCH_SIZE = 16
LAYERS = 2
HEADS = 4
SIGLIP_TEXT_LENGTH = 32  # tokens per text, eos included; the released SigLIP uses 64
BLIP_TEXT_LENGTH = 64  # prompt plus generated tokens
BLIP_DIM = 64

# Ids 0, 1, 2 as in the released SigLIP sentencepiece vocabulary; pad and eos are both "</s>".
SIGLIP_SPECIALS = ("<pad>", "</s>", "<unk>")
# BERT specials at ids 0-4, then the words, then "[DEC]", BLIP's decoder start token.
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
BLIP_BOS = "[DEC]"


def _pieces(backend: Tokenizer, words: Iterable[str]) -> list[str]:
    """Distinct tokens `backend`'s normaliser and pre-tokeniser cut `words` into, first-seen order."""
    pieces: dict[str, None] = {}
    for word in words:
        normalised = backend.normalizer.normalize_str(word)
        pieces.update((piece, None) for piece, _ in backend.pre_tokenizer.pre_tokenize_str(normalised))
    return list(pieces)


def _check_image_size(image_size: int, patch_size: int = PATCH_SIZE) -> None:
    if image_size <= 0 or image_size % patch_size:
        raise ValueError(f"image_size must be a positive multiple of {patch_size}, got {image_size}")


def _siglip_tokenizer(words: Iterable[str], text_length: int) -> PreTrainedTokenizerFast:
    """Lower-casing word-level tokenizer; appends "</s>"; hyphenated words stay whole, other punctuation splits off.

    Every piece of `words` is in the vocabulary, so text made of them encodes without "<unk>".
    """
    unk = SIGLIP_SPECIALS[2]
    backend = Tokenizer(models.WordLevel({}, unk_token=unk))
    backend.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(r"[^\w-]"), behavior="isolated")]
    )
    tokens = list(SIGLIP_SPECIALS) + [p for p in _pieces(backend, words) if p not in SIGLIP_SPECIALS]
    eos = SIGLIP_SPECIALS[1]
    backend.model = models.WordLevel({token: i for i, token in enumerate(tokens)}, unk_token=unk)
    backend.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", special_tokens=[(eos, tokens.index(eos))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=eos,
        eos_token=eos,
        unk_token=unk,
        model_max_length=text_length,
    )


def build_tiny_siglip(
    folder: str | Path,
    words: Iterable[str],
    seed: int = 0,
    image_size: int = 64,
    dim: int = 64,
    layers: int = LAYERS,
    patch_size: int = PATCH_SIZE,
    text_length: int = SIGLIP_TEXT_LENGTH,
) -> Path:
    """Write a `SiglipModel` checkpoint, its tokenizer and image processor into `folder`; return `folder`.

    Image and text features are both (n, dim); each tower has `layers` transformer layers of `HEADS`
    heads. The tokenizer pads and truncates to `text_length` tokens; images are resized to
    `image_size` x `image_size` (a multiple of `patch_size`). The same arguments give byte-identical
    `model.safetensors`.
    """
    _check_image_size(image_size, patch_size)
    folder = Path(folder)
    tokenizer = _siglip_tokenizer(words, text_length)
    config = SiglipConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": dim,
            "intermediate_size": 2 * dim,
            "num_hidden_layers": layers,
            "num_attention_heads": HEADS,
            "max_position_embeddings": text_length,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "bos_token_id": None,
        },
        vision_config={
            "hidden_size": dim,
            "intermediate_size": 2 * dim,
            "num_hidden_layers": layers,
            "num_attention_heads": HEADS,
            "image_size": image_size,
            "patch_size": patch_size,
        },
    )
    torch.manual_seed(seed)
    SiglipModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    SiglipImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder


def _blip_tokenizer(words: Iterable[str]) -> BertTokenizer:
    """Lower-casing BERT WordPiece tokenizer over `words`, with "[DEC]" as bos like BLIP's released tokenizer.

    Punctuation, hyphens included, splits off as in BERT: "t-shirt" encodes as "t", "-", "shirt"
    and decodes as "t - shirt", as the released BLIP does.
    """
    probe = BertTokenizer().backend_tokenizer
    pieces = [p for p in _pieces(probe, words) if p not in BERT_SPECIALS and p != BLIP_BOS]
    tokens = [*BERT_SPECIALS, *pieces, BLIP_BOS]
    return BertTokenizer(
        vocab={token: i for i, token in enumerate(tokens)},
        bos_token=BLIP_BOS,
        model_max_length=BLIP_TEXT_LENGTH,
    )


def build_tiny_blip(folder: str | Path, words: Iterable[str], seed: int = 0, image_size: int = 64) -> Path:
    """Write a `BlipForConditionalGeneration` checkpoint and its `BlipProcessor` into `folder`; return `folder`.

    Generation starts from "[DEC]" and stops at "[SEP]", as in the released captioner; images are
    resized to `image_size` x `image_size` (a multiple of `PATCH_SIZE`). The same arguments give
    byte-identical `model.safetensors`.
    """
    _check_image_size(image_size)
    folder = Path(folder)
    tokenizer = _blip_tokenizer(words)
    config = BlipConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": BLIP_DIM,
            "encoder_hidden_size": BLIP_DIM,
            "intermediate_size": 2 * BLIP_DIM,
            "projection_dim": BLIP_DIM,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "max_position_embeddings": BLIP_TEXT_LENGTH,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "sep_token_id": tokenizer.sep_token_id,
        },
        vision_config={
            "hidden_size": BLIP_DIM,
            "intermediate_size": 2 * BLIP_DIM,
            "projection_dim": BLIP_DIM,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "image_size": image_size,
            "patch_size": PATCH_SIZE,
            "initializer_range": 0.02,  # the default, 1e-10, makes captions ignore the image
        },
        projection_dim=BLIP_DIM,
        image_text_hidden_size=BLIP_DIM,
    )
    torch.manual_seed(seed)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    image_processor = BlipImageProcessor(size={"height": image_size, "width": image_size})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def deepened(model: SiglipModel, layers: int) -> SiglipModel:
    """`model` with both towers grown to `layers` encoder layers: its own layers kept at the bottom,
    each new one on top starting as the identity (its attention and MLP output projections zero),
    so the grown model embeds exactly as `model` does until it is trained."""
    config = copy.deepcopy(model.config)
    for name in ("text_config", "vision_config"):
        tower = getattr(config, name)
        if layers < tower.num_hidden_layers:
            raise ValueError(f"cannot grow a {tower.num_hidden_layers}-layer {name} to {layers} layers")
        tower.num_hidden_layers = layers
    grown = SiglipModel(config)
    unexpected = grown.load_state_dict(model.state_dict(), strict=False).unexpected_keys  # missing: the new layers
    if unexpected:
        raise ValueError(f"the grown model has no place for {unexpected}")
    encoders = lambda m: (m.text_model.encoder, m.vision_model.encoder)  # noqa: E731
    for own, encoder in zip(encoders(model), encoders(grown)):
        for layer in encoder.layers[len(own.layers) :]:
            for projection in (layer.self_attn.out_proj, layer.mlp.fc2):
                torch.nn.init.zeros_(projection.weight)
                torch.nn.init.zeros_(projection.bias)
    return grown


def with_input_size(model: SiglipModel, image_size: int) -> SiglipModel:
    """`model` taking `image_size` px images: the same weights, its vision position embeddings
    resized to the new patch grid by SigLIP's own `interpolate_pos_encoding` (bicubic), fixed into
    the weights, so the model sees finer detail through the same patches."""
    config = copy.deepcopy(model.config)
    vision = config.vision_config
    if image_size % vision.patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of the patch size {vision.patch_size}")
    vision.image_size = image_size
    embeddings = model.vision_model.embeddings
    patches = torch.empty(1, (image_size // vision.patch_size) ** 2, embeddings.embed_dim)  # only its shape is read
    with torch.no_grad():
        resized = embeddings.interpolate_pos_encoding(patches, image_size, image_size)
    state = model.state_dict()
    state["vision_model.embeddings.position_embedding.weight"] = resized[0].contiguous()
    grown = SiglipModel(config)
    grown.load_state_dict(state)
    return grown
