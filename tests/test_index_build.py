"""Tests for pipeline/index_build.py on Ray (build, keep, update, rebuild) and actors/scorer.py
(garments through one searcher per index shard, then the best match)."""

import dataclasses
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actors.scorer import IndexShardSearcher, ShardCandidates, best_match
from core import payload
from core.config import IndexConfig, ScoringConfig
from core.index import IndexManifest, index_ids, work_shard_of
from core.schemas import CROPS_DIR, ERROR, INDEX_DIR, REASON, SHARD
from core.storage import StorageConfig
from pipeline.commits import ShardCommit
from pipeline.index_build import build

pytestmark = pytest.mark.ray
STORAGE = StorageConfig()
DIM = 16


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float16).astype(np.float32)


def _clustered(rng: np.random.Generator, n: int) -> np.ndarray:
    centres = _unit(np.random.default_rng(99), 16)
    v = centres[rng.integers(16, size=n)] + rng.normal(size=(n, DIM)).astype(np.float32) / np.sqrt(DIM)
    return _unit_rows(v)


def _unit_rows(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float16).astype(np.float32)


@dataclasses.dataclass
class Crops:
    """Crop files of work shards under an output folder, as the lookbook stage commits them; the
    vectors, ids and caption vectors of every row, by stable index id."""

    output: str
    commits: dict[int, ShardCommit] = dataclasses.field(default_factory=dict)
    vectors: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
    captions: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)

    def write(self, work_shard: int, image: np.ndarray, caption: np.ndarray, files: int = 2) -> None:
        """Commit `work_shard` with these rows, split over `files` Parquet files."""
        self.drop(work_shard)
        commit, first = ShardCommit(rows=len(image), inputs=f"rows-{work_shard}-{len(image)}"), 0
        for n, part in enumerate(np.array_split(np.arange(len(image)), files)):
            ids = index_ids(work_shard, len(part), first)
            name = f"{CROPS_DIR}/shard={work_shard:05d}/part-{n}.parquet"
            half = pa.list_(pa.float16(), DIM)
            table = pa.table(
                {
                    "crop_id": [f"c{i}" for i in ids],
                    "image_id": [f"i{i}" for i in ids],
                    "uri": [f"/lookbook/i{i}.jpg" for i in ids],
                    "box": pa.array([[0.0, 0.0, 1.0, float(i % 7)] for i in ids], pa.list_(pa.float32(), 4)),
                    "embedding": pa.FixedSizeListArray.from_arrays(pa.array(image[part].ravel()), DIM).cast(half),
                    "caption_embedding": pa.FixedSizeListArray.from_arrays(pa.array(caption[part].ravel()), DIM).cast(
                        half
                    ),
                }
            )
            path = f"{self.output}/{name}"
            os.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            pq.write_table(table, path)
            commit.files.append(name)
            commit.sizes.append(os.path.getsize(path))
            for i, row in zip(ids.tolist(), part.tolist()):
                self.vectors[i], self.captions[i] = image[row], caption[row]
            first += len(part)
        self.commits[work_shard] = commit

    def drop(self, work_shard: int) -> None:
        self.commits.pop(work_shard, None)
        for table in (self.vectors, self.captions):
            for i in [i for i in table if i >> 40 == work_shard]:
                del table[i]

    def exact(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) of the exact top-k by inner product, ties by lower id."""
        ids = np.array(sorted(self.vectors), np.int64)
        scores = queries @ np.stack([self.vectors[i] for i in ids]).T
        order = np.lexsort((np.broadcast_to(ids, scores.shape), -scores), axis=1)[:, :k]
        return ids[order], np.take_along_axis(scores, order, axis=1)


def _garments(rng: np.random.Generator, n: int) -> dict:
    return {
        "image_id": np.array([f"g{i}" for i in range(n)], dtype=object),
        "uri": np.array([f"u{i}" for i in range(n)], dtype=object),
        "caption": np.array([f"t{i}" for i in range(n)], dtype=object),
        "embedding": _clustered(rng, n),
        "caption_embedding": _unit(rng, n),
        REASON: np.array([""] * (n - 1) + ["decode_error"], dtype=object),
        ERROR: np.array([""] * (n - 1) + ["bad"], dtype=object),
        SHARD: np.zeros(n, np.int32),
    }


def _scored(output: str, garments: dict, cfg: ScoringConfig, index_cfg: IndexConfig) -> dict:
    """Garments through every index shard's ShardCandidates in turn, then best_match."""
    manifest = IndexManifest.from_json(open(f"{output}/{INDEX_DIR}/manifest.json").read())
    batch = garments
    for shard in range(len(manifest.shards)):
        batch = ShardCandidates(f"{output}/{INDEX_DIR}", shard, cfg, index_cfg, STORAGE)(batch)
    return best_match(batch, cfg)


def _crops(tmp_path, sizes: dict[int, int], seed: int = 0) -> Crops:
    rng = np.random.default_rng(seed)
    crops = Crops(str(tmp_path / "out"))
    for work_shard, n in sizes.items():
        crops.write(work_shard, _clustered(rng, n), _unit(rng, n))
    return crops


@pytest.mark.parametrize(
    ("factory", "nprobe"),
    [("auto", None), ("IVF8,SQfp16", 8), ("IVF8_HNSW32,SQfp16", 8), ("IVF8,PQ4x4fs", 8)],
)
def test_scoring_over_every_shard_equals_exact_search(local_ray, tmp_path, factory: str, nprobe) -> None:
    """Compressed codes (PQ4x4fs: 2 bytes a vector) re-ranked at a depth that covers each shard are exact too."""
    crops = _crops(tmp_path, {0: 120, 1: 0, 2: 250, 3: 130, 5: 61})
    index_cfg = IndexConfig(shards=3, factory=factory, nprobe=nprobe, train_sample=300, rerank_depth=320, use_gpu="off")
    manifest = build(crops.output, crops.commits, 8, index_cfg, STORAGE)
    assert manifest.rows == 561 and manifest.dim == DIM and len(manifest.shards) == 3
    assert [sorted(map(int, s.work_shards)) for s in manifest.shards] == [[0, 3], [1], [2, 5]]
    assert manifest.index_type == ("Flat" if factory == "auto" else factory)
    cfg = ScoringConfig(top_k=7, lambda_vlm=0.3, lambda_siglip=0.7)
    garments = _garments(np.random.default_rng(1), 12)
    scored = _scored(crops.output, garments, cfg, index_cfg)
    want_ids, want_scores = crops.exact(garments["embedding"][:-1], 7)
    got = [[int(c[1:]) for c in row] for row in scored["candidate_crop_ids"][:-1]]
    assert got == want_ids.tolist()  # every list probed (or exact): the exact top-k, in order
    np.testing.assert_allclose(np.stack(scored["candidate_s_siglip"][:-1]), want_scores, atol=1e-5)
    s_vlm = np.array([[crops.captions[i] @ g for i in row] for row, g in zip(want_ids, garments["caption_embedding"])])
    np.testing.assert_allclose(np.stack(scored["candidate_s_vlm"][:-1]), s_vlm, atol=1e-5)
    best = np.argmax(0.3 * s_vlm + 0.7 * want_scores, axis=1)
    assert scored["crop_id"][:-1].tolist() == [f"c{want_ids[r, b]}" for r, b in enumerate(best)]
    assert scored["box"][0].tolist() == [0.0, 0.0, 1.0, float(want_ids[0, best[0]] % 7)]
    assert scored["n_candidates"].tolist() == [7] * 11 + [0]  # the quarantined garment is not searched
    assert scored["crop_id"][-1] is None and np.isnan(scored["score"][-1])


@pytest.mark.parametrize("factory", ["IVF8,SQfp16", "IVF8,PQ4x4fs"])
def test_update_replaces_changed_work_shards_and_equals_a_rebuild(local_ray, tmp_path, factory: str) -> None:
    """#14: a run with new and redone lookbook shards adds to the trained index instead of rebuilding it."""
    crops = _crops(tmp_path, {0: 300, 1: 300, 2: 300, 3: 300})
    index_cfg = IndexConfig(shards=2, factory=factory, train_sample=1200, rerank_depth=600, use_gpu="off")
    first = build(crops.output, crops.commits, 8, index_cfg, STORAGE)
    index = tmp_path / "out" / INDEX_DIR
    untouched = first.shards[1].index_file
    rng = np.random.default_rng(7)
    crops.write(2, _clustered(rng, 150), _unit(rng, 150))  # redone with other rows
    crops.write(4, _clustered(rng, 100), _unit(rng, 100))  # new
    crops.drop(0)  # gone from the crops table
    second = build(crops.output, crops.commits, 8, index_cfg, STORAGE)
    assert second.params["built"] == "updated" and second.generation == 2
    assert second.template_file == first.template_file and second.trained_at_rows == 1200
    assert second.shards[1].index_file == untouched and second.shards[0].index_file.endswith(".g00002.faiss")
    assert sorted(second.work_shards()) == [1, 2, 3, 4] and second.rows == 850
    assert sorted(p.name for p in index.iterdir()) == sorted(
        {"manifest.json", first.template_file} | {n for s in second.shards for n in (s.index_file, s.payload_file)}
    )  # the first generation's shard 0 files are gone
    ids = payload.read(str(index / second.shards[0].payload_file))[payload.INDEX_ID].to_numpy()
    assert (np.diff(ids) > 0).all() and set(work_shard_of(ids).tolist()) == {2, 4}
    assert ids.tolist() == sorted(i for i in crops.vectors if (i >> 40) % 2 == 0)
    stored = payload.read(str(index / second.shards[0].payload_file)).column_names
    assert (payload.EMBEDDING in stored) == ("PQ" in factory)  # compressed codes keep the vectors to re-rank with

    every_list = dataclasses.replace(index_cfg, nprobe=8)
    garments = _garments(np.random.default_rng(3), 20)
    updated = _scored(crops.output, garments, ScoringConfig(top_k=10), every_list)
    rebuilt_dir = tmp_path / "rebuilt"
    rebuilt = Crops(str(rebuilt_dir), crops.commits)
    for commit in crops.commits.values():  # the same crop files under a fresh output folder
        for name in commit.files:
            (rebuilt_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (rebuilt_dir / name).write_bytes((tmp_path / "out" / name).read_bytes())
    assert build(rebuilt.output, rebuilt.commits, 8, index_cfg, STORAGE).params["built"] == "rebuilt"
    again = _scored(rebuilt.output, garments, ScoringConfig(top_k=10), every_list)
    for column in ("candidate_crop_ids", "crop_id", "n_candidates"):
        assert [np.asarray(v).tolist() for v in updated[column]] == [np.asarray(v).tolist() for v in again[column]]
    np.testing.assert_allclose(updated["score"][:-1], again["score"][:-1], atol=1e-6)


def test_rows_past_the_growth_limit_retrain(local_ray, tmp_path) -> None:
    crops = _crops(tmp_path, {0: 200, 1: 200})
    index_cfg = IndexConfig(shards=2, factory="IVF4,SQfp16", train_sample=400, retrain_growth=1.5, use_gpu="off")
    build(crops.output, crops.commits, 4, index_cfg, STORAGE)
    rng = np.random.default_rng(5)
    crops.write(2, _clustered(rng, 150), _unit(rng, 150))  # 550 rows <= 1.5 x 400: updated
    assert build(crops.output, crops.commits, 4, index_cfg, STORAGE).params["built"] == "updated"
    crops.write(3, _clustered(rng, 100), _unit(rng, 100))  # 650 > 600: retrained on all of them
    manifest = build(crops.output, crops.commits, 4, index_cfg, STORAGE)
    assert (manifest.params["built"], manifest.trained_at_rows, manifest.generation) == ("rebuilt", 650, 3)


def test_build_keeps_an_index_of_the_same_crop_files_and_settings(local_ray, tmp_path) -> None:
    crops = _crops(tmp_path, {0: 300, 1: 200})
    index_cfg = IndexConfig(shards=2, factory="IVF8,SQfp16", train_sample=500, use_gpu="off")
    first = build(crops.output, crops.commits, 2, index_cfg, STORAGE)
    shard = tmp_path / "out" / INDEX_DIR / first.shards[0].index_file
    built_at = shard.stat().st_mtime_ns
    assert build(crops.output, crops.commits, 2, index_cfg, STORAGE) == first
    assert shard.stat().st_mtime_ns == built_at
    assert first.nprobe in (1, 2, 4, 8) and first.params["measured_recall"] >= 0.95

    searched = dataclasses.replace(index_cfg, target_recall=0.2)  # a search setting: no shard rewritten
    cheaper = build(crops.output, crops.commits, 2, searched, STORAGE)
    assert cheaper.shards == first.shards and cheaper.nprobe <= first.nprobe and cheaper.generation == 2
    contents = dataclasses.replace(index_cfg, shards=1)  # a setting of the contents: rebuilt
    assert len(build(crops.output, crops.commits, 2, contents, STORAGE).shards) == 1


def test_a_corrupted_shard_is_refused(local_ray, tmp_path) -> None:
    crops = _crops(tmp_path, {0: 40, 1: 30})
    index_cfg = IndexConfig(shards=2, factory="Flat", use_gpu="off")
    manifest = build(crops.output, crops.commits, 2, index_cfg, STORAGE)
    shard = tmp_path / "out" / INDEX_DIR / manifest.shards[1].index_file
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"index shard {manifest.shards[1].index_file} is corrupt: sha256"):
        IndexShardSearcher(str(tmp_path / "out" / INDEX_DIR), 1, index_cfg, STORAGE, k=10)


def test_an_empty_index_leaves_every_garment_unmatched(local_ray, tmp_path) -> None:
    """#13, item 9: a lookbook that gave no crop crashed the scorer (zero-width payload)."""
    crops = Crops(str(tmp_path / "out"))
    index_cfg = IndexConfig(use_gpu="off")
    manifest = build(crops.output, crops.commits, 4, index_cfg, STORAGE)
    assert manifest.rows == 0 and len(manifest.shards) == 1
    scored = _scored(crops.output, _garments(np.random.default_rng(0), 3), ScoringConfig(top_k=5), index_cfg)
    assert scored["n_candidates"].tolist() == [0, 0, 0] and np.isnan(scored["score"]).all()
    assert scored["crop_id"].tolist() == [None] * 3


def test_the_search_stage_streams_through_one_pool_per_shard(local_ray, tmp_path) -> None:
    """#14: memory per scorer actor no longer grows with the index: each pool holds one shard, and
    garments stream through the pools (map operators only, nothing gathered on the driver)."""
    import ray

    from core.config import PoolConfig
    from pipeline.stage import AttemptGuard, attempt_ledger, map_actors, map_tasks

    crops = _crops(tmp_path, {0: 100, 1: 100, 2: 100})
    index_cfg = IndexConfig(shards=3, factory="Flat", use_gpu="off")
    build(crops.output, crops.commits, 3, index_cfg, STORAGE)
    cfg = ScoringConfig(top_k=5, pool=PoolConfig(batch_size=8, num_cpus=0.25))
    garments = _garments(np.random.default_rng(2), 40)
    rows = [{k: v[i] for k, v in garments.items()} for i in range(40)]
    with attempt_ledger() as ledger:
        guard = AttemptGuard(ledger, "garments", 2)
        ds = ray.data.from_items(rows, override_num_blocks=5)
        for shard in range(3):
            kwargs = {"index_dir": f"{crops.output}/{INDEX_DIR}", "shard": shard, "cfg": cfg, "index_cfg": index_cfg}
            ds = map_actors(
                ds, ShardCandidates, cfg.pool, guard, name=f"IndexShard{shard:03d}", storage=STORAGE, **kwargs
            )
        ds = map_tasks(ds, best_match, guard, "postprocess", cfg=cfg)
        streamed = {
            r["garment_id"]: r["candidate_crop_ids"] for b in ds.iter_batches(batch_size=None) for r in _rows(b)
        }
        stats = ds.stats()
    operators = [
        line.split("Operator ")[1].split(":")[0] for line in stats.splitlines() if line.startswith("Operator ")
    ]
    assert all("MapBatches" in op or "ReadItems" in op or "FromItems" in op for op in operators), operators
    assert sum("IndexShard" in op for op in operators) == 3
    direct = _scored(crops.output, garments, cfg, index_cfg)
    assert {g: list(c) for g, c in streamed.items()} == {
        g: list(c) for g, c in zip(direct["garment_id"], direct["candidate_crop_ids"])
    }


def _rows(batch: dict) -> list[dict]:
    return [{k: v[i] for k, v in batch.items()} for i in range(len(batch["garment_id"]))]


@pytest.mark.gpu
def test_a_scorer_actor_on_a_gpu_finds_what_the_cpu_finds(local_ray, tmp_path) -> None:
    """#14: with faiss-gpu (`.[gpu]`) a shard moves to the GPU its actor was given."""
    from core import index as shard_index

    if shard_index.gpus_visible() < 1:
        pytest.skip("no GPU visible to faiss")
    crops = _crops(tmp_path, {0: 3000, 1: 3000})
    index_cfg = IndexConfig(shards=2, factory="IVF16,SQfp16", nprobe=16, train_sample=6000, use_gpu="auto")
    build(crops.output, crops.commits, 2, index_cfg, STORAGE)
    garments = _garments(np.random.default_rng(4), 50)
    on_gpu = _scored(crops.output, garments, ScoringConfig(top_k=10), index_cfg)
    on_cpu = _scored(crops.output, garments, ScoringConfig(top_k=10), dataclasses.replace(index_cfg, use_gpu="off"))
    searcher = IndexShardSearcher(f"{crops.output}/{INDEX_DIR}", 0, index_cfg, STORAGE, k=10)
    assert shard_index._on_gpu(searcher.index)
    assert [list(c) for c in on_gpu["candidate_crop_ids"]] == [list(c) for c in on_cpu["candidate_crop_ids"]]
    np.testing.assert_allclose(on_gpu["score"][:-1], on_cpu["score"][:-1], atol=1e-3)
