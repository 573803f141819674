from pathlib import Path

import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf
from PIL import Image, ImageFile

from core.config import DecodeConfig
from core.images import DECODE_ERROR, decode
from core.vocab import load_vocab
from datagen.synthetic import (
    ATTRIBUTES,
    CATEGORY_STYLES,
    GARMENT_SCHEMA,
    LOOKBOOK_SCHEMA,
    TRUTH_SCHEMA,
    SampleInfo,
    make_sample,
)
from jobs.make_demo_data import main

VOCAB_PATH = Path(__file__).resolve().parents[1] / "conf" / "vocab.yaml"
N_GARMENTS, N_SCENES = 6, 12


@pytest.fixture(scope="module")
def vocab() -> dict[str, list[str]]:
    return load_vocab(VOCAB_PATH)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory, vocab: dict[str, list[str]]) -> SampleInfo:
    return make_sample(tmp_path_factory.mktemp("sample"), N_GARMENTS, N_SCENES, seed=0, vocab=vocab)


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_different_seed_differs(tmp_path: Path, vocab: dict[str, list[str]]) -> None:
    out = tmp_path / "out"
    make_sample(out, N_GARMENTS, N_SCENES, seed=3, vocab=vocab)
    first = _file_bytes(out)
    for path in out.rglob("*"):
        if path.is_file():
            path.unlink()
    make_sample(out, N_GARMENTS, N_SCENES, seed=3, vocab=vocab)
    assert _file_bytes(out) == first

    info = make_sample(tmp_path / "other", N_GARMENTS, N_SCENES, seed=4, vocab=vocab)
    second = _file_bytes(tmp_path / "other")
    assert first.keys() == second.keys()
    for name in first:
        if Path(name).stem not in info.bad_ids and name != "lookbook.parquet":
            assert first[name] != second[name], name


def test_images_do_not_depend_on_out_dir(tmp_path: Path, vocab: dict[str, list[str]]) -> None:
    make_sample(tmp_path / "a", N_GARMENTS, N_SCENES, seed=5, vocab=vocab)
    make_sample(tmp_path / "b", N_GARMENTS, N_SCENES, seed=5, vocab=vocab)
    a, b = _file_bytes(tmp_path / "a"), _file_bytes(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(a[name] == b[name] for name in a if not name.endswith(".parquet") or name == "truth.parquet")


def test_manifests_schemas_and_uris(sample: SampleInfo) -> None:
    paths = (sample.garments_path, sample.lookbook_path, sample.truth_path)
    garments, lookbook, truth = (pq.read_table(path) for path in paths)
    assert garments.schema.equals(GARMENT_SCHEMA)
    assert lookbook.schema.equals(LOOKBOOK_SCHEMA)
    assert truth.schema.equals(TRUTH_SCHEMA)
    assert (garments.num_rows, lookbook.num_rows, truth.num_rows) == (N_GARMENTS, N_SCENES + 2, sample.n_placements)
    assert sample.n_images == N_SCENES + 2
    for uri in garments.column("uri").to_pylist() + lookbook.column("uri").to_pylist():
        assert Path(uri).is_absolute() and Path(uri).is_file()
    assert garments.column("garment_id").to_pylist() == [f"g{i:05d}" for i in range(N_GARMENTS)]
    assert lookbook.column("image_id").to_pylist() == [f"l{i:06d}" for i in range(N_SCENES + 2)]


def test_attributes_in_vocab_and_caption(sample: SampleInfo, vocab: dict[str, list[str]]) -> None:
    for row in pq.read_table(sample.garments_path).to_pylist():
        for name in ATTRIBUTES:
            assert row[name] in vocab[name]
            assert row[name] == "none" or row[name] in row["text"]
        _, sleeves, lengths = CATEGORY_STYLES[row["category"]]
        assert row["sleeve"] in sleeves and row["length"] in lengths
        with Image.open(row["uri"]) as image:
            assert image.size == (256, 256)


def test_truth_boxes_inside_their_images(sample: SampleInfo) -> None:
    truth = pq.read_table(sample.truth_path).to_pylist()
    uris = dict(zip(*pq.read_table(sample.lookbook_path).to_pydict().values(), strict=True))
    garment_ids = set(pq.read_table(sample.garments_path).column("garment_id").to_pylist())
    assert truth
    for row in truth:
        assert row["garment_id"] in garment_ids and row["image_id"] not in sample.bad_ids
        with Image.open(uris[row["image_id"]]) as image:
            width, height = image.size
        assert 0 <= row["x0"] < row["x1"] <= width and 0 <= row["y0"] < row["y1"] <= height


def test_bad_files_are_unreadable(sample: SampleInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    uris = dict(zip(*pq.read_table(sample.lookbook_path).to_pydict().values(), strict=True))
    empty, truncated = (Path(uris[image_id]) for image_id in sample.bad_ids)
    assert empty.stat().st_size == 0
    assert truncated.read_bytes()[:2] == b"\xff\xd8"
    for bad in (empty, truncated):  # Pillow's own decoder, as the pipeline uses it (ultralytics patches Image.open)
        assert decode(bad.read_bytes(), DecodeConfig()).reason == DECODE_ERROR
    good = [uri for image_id, uri in uris.items() if image_id not in sample.bad_ids]
    for uri in good:
        with Image.open(uri) as image:
            image.load()


def test_no_bad_files_and_unsupported_vocab(tmp_path: Path, vocab: dict[str, list[str]]) -> None:
    info = make_sample(tmp_path / "clean", 2, 3, seed=1, vocab=vocab, bad_files=False)
    assert info.bad_ids == () and pq.read_table(info.lookbook_path).num_rows == 3
    with pytest.raises(ValueError, match="colour"):
        make_sample(tmp_path / "bad_vocab", 2, 3, seed=1, vocab={**vocab, "colour": ["teal"]})


def test_cli_prints_manifest_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--out", str(tmp_path / "demo"), "--garments", "2", "--scenes", "2", "--vocab", str(VOCAB_PATH)])
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1
    for name in ("garments", "lookbook", "truth"):
        assert str(tmp_path / "demo" / f"{name}.parquet") in printed


def test_vocab_file_loads_as_plain_lists(vocab: dict[str, list[str]]) -> None:
    assert vocab == OmegaConf.to_container(OmegaConf.load(VOCAB_PATH))
    assert set(ATTRIBUTES) <= vocab.keys()
