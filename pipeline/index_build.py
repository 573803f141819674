"""Index stage: the committed crop files -> FAISS shards built or updated by parallel Ray tasks, and
the manifest written last.

Index shard s holds the work shards w with w % shards == s (`core.index`), so a run touches only
the index shards whose work shards changed. Three outcomes, by what the manifest under `index/`
records: **kept** (same crop files and settings); **updated** (same settings and type, rows
within `index.retrain_growth` times those the template was trained at, the same shard count
still fits the budget): each touched shard drops the vectors of its changed or removed work
shards and adds their new rows, against the same trained template; **rebuilt** otherwise: one
task trains the candidate types on a sample across all files and keeps the one
`core.index_plan.choose_type` picks by their measured recall, then one task per shard fills a
copy of its template.
No process holds more than one shard's vectors in float32 at once: rows are added a file at a
time and the payload is streamed into its file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass, replace

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray

from core import index as shard_index
from core import index_plan, payload
from core.arrow import matrix
from core.config import IndexConfig, MineConfig
from core.payload import Payload
from core.schemas import CROPS_DIR, INDEX_DIR
from core.shard_search import ShardSearch, reranked
from core.storage import StorageConfig, filesystem, join, local_copy, put_file, read_bytes, write_bytes
from pipeline.commits import ShardCommit


@dataclass(frozen=True)
class CropFile:
    """One crop Parquet file of work shard `work_shard`: its uri, rows and first row number there."""

    uri: str
    work_shard: int
    rows: int
    first_row: int


def work_shard_digest(commit: ShardCommit) -> str:
    """What an index shard records of a work shard it holds: its crop files, their sizes and its inputs."""
    crops = [(f, s) for f, s in zip(commit.files, commit.sizes) if f.startswith(f"{CROPS_DIR}/")]
    return hashlib.sha256(json.dumps([crops, commit.inputs]).encode()).hexdigest()[:32]


def crop_files(output: str, crops: dict[int, ShardCommit], storage: StorageConfig) -> tuple[list[CropFile], int, str]:
    """(every committed crop file with its rows, the embedding dimension, its stored dtype), from
    the Parquet footers only. Raises ValueError when the files mix dimensions or dtypes."""
    files, kinds = [], set()
    for shard in sorted(crops):
        first = 0
        for name in crops[shard].files_in(CROPS_DIR):
            fs, path = filesystem(join(output, name), storage)
            with fs.open_input_file(path) as f:
                footer = pq.ParquetFile(f)
                rows, field = footer.metadata.num_rows, footer.schema_arrow.field("embedding").type
            kinds.add((field.list_size, field.value_type.to_pandas_dtype().__name__))
            files.append(CropFile(join(output, name), shard, rows, first))
            first += rows
    if len(kinds) > 1:
        raise ValueError(f"crop files under {join(output, CROPS_DIR)} mix embedding (dim, dtype) {sorted(kinds)}")
    dim, dtype = kinds.pop() if kinds else (0, "float16")
    return files, dim, dtype


def read_sample(files: list[CropFile], size: int, storage: StorageConfig) -> np.ndarray:
    """(n, dim) float32 embeddings of a uniform sample of min(size, rows) rows across all files."""
    parts = []
    for position, rows in shard_index.sample_rows([f.rows for f in files], size):
        fs, path = filesystem(files[position].uri, storage)
        column = pq.read_table(path, filesystem=fs, columns=["embedding"])["embedding"]
        parts.append(matrix(column.take(pa.array(rows))))
    return np.concatenate(parts)


@ray.remote
def _train(
    files: list[CropFile], factories: list[str], rows: int, dim: int, cfg: IndexConfig, storage: StorageConfig
) -> tuple[bytes, str, int, dict]:
    """(serialized trained empty index, its factory, rows it was trained on, the recalls
    `choose_type` chose by): one of `factories` (the first trains the coarse quantizer, the other
    reuses it); no rows for types that need no training."""
    sample = read_sample(files, rows, storage) if rows else np.zeros((0, dim), np.float32)
    templates = {factories[0]: shard_index.train_template(sample, factories[0], cfg.use_gpu)}
    if len(factories) == 1:
        return templates[factories[0]], factories[0], len(sample), {}
    first = shard_index.from_template(templates[factories[0]], "off")
    for factory in factories[1:]:
        quantizer = faiss.extract_index_ivf(first).quantizer
        templates[factory] = shard_index.train_template(sample, factory, cfg.use_gpu, quantizer=quantizer)
    measured = {f: index_plan.measure_type(f, t, sample, cfg.rerank_depth) for f, t in templates.items()}
    on_gpu = shard_index.gpu_choice(cfg.use_gpu, shard_index.gpus_visible())[0]
    chosen = index_plan.choose_type(measured, on_gpu)
    return templates[chosen], chosen, len(sample), measured


@ray.remote
def _fill(
    shard: int,
    previous: shard_index.ShardEntry | None,
    drop: list[int],
    files: list[CropFile],
    digests: dict[str, str],
    template: bytes,
    factory: str,
    names: tuple[str, str],
    index_dir: str,
    cfg: IndexConfig,
    storage: StorageConfig,
) -> shard_index.ShardEntry:
    """Index shard `shard`: the `previous` one (None: from the template) without the work shards in
    `drop`, plus the rows of `files`, of type `factory`; written under `names` (index, payload)
    with its recall."""
    if previous is None:
        index = shard_index.from_template(template, cfg.use_gpu)
    else:
        local = local_copy(join(index_dir, previous.index_file), cfg.local_cache, storage)
        index = shard_index.read_local(local, previous.sha256, previous.index_file)
        shard_index.remove_work_shards(index, drop)
    total = sum(f.rows for f in files)
    rng = np.random.default_rng([shard_index.SEED, shard])
    picks = np.sort(rng.choice(total, min(index_plan.RECALL_QUERIES, total), replace=False))
    queries, query_ids, seen = [], [], 0
    columns = payload.columns(reranked(factory))
    with PayloadWriter(
        join(index_dir, names[1]), previous, drop, index_dir, cfg, storage, reranked(factory)
    ) as shard_payload:
        for f in files:
            fs, path = filesystem(f.uri, storage)
            table = pq.read_table(path, filesystem=fs, columns=list(dict.fromkeys(["embedding", *columns])))
            ids = shard_index.index_ids(f.work_shard, f.rows, f.first_row)
            vectors = matrix(table["embedding"])
            shard_index.add(index, vectors, ids)
            mine = picks[(picks >= seen) & (picks < seen + f.rows)] - seen
            queries.append(vectors[mine])
            query_ids.append(ids[mine])
            shard_payload.write(table.select(columns).append_column(payload.INDEX_ID, pa.array(ids)))
            seen += f.rows
        cpu = faiss.index_gpu_to_cpu(index) if shard_index._on_gpu(index) else index
        if files:  # measured on the local payload file, before it goes to its uri
            stored = Payload(shard_payload.finish()) if reranked(factory) else None
            shard = ShardSearch(cpu, stored.vectors if stored else None, cfg.rerank_depth)
            queries = np.concatenate(queries)
            truth = index_plan.exact_neighbours(shard, queries, stored.blocks() if stored else None)
            recall = index_plan.shard_recall(shard, queries, np.concatenate(query_ids), truth)
        else:  # an update that only removed work shards keeps the measured recall
            recall = previous.recall if previous else {}
    return replace(
        _write_index(cpu, index_dir, names[0], storage), payload_file=names[1], work_shards=digests, recall=recall
    )


def _write_index(index: faiss.Index, index_dir: str, name: str, storage: StorageConfig) -> shard_index.ShardEntry:
    """Write `index` to `index_dir/name` through a local temporary file (no copy of it in memory)."""
    handle, local = tempfile.mkstemp(suffix=".faiss")
    os.close(handle)
    faiss.write_index(index, local)
    digest = shard_index.file_sha256(local)
    put_file(local, join(index_dir, name), storage)
    return shard_index.ShardEntry(name, "", int(index.ntotal), {}, digest)


class PayloadWriter:
    """Streams one shard's payload (`payload.columns(rerank)` plus payload.INDEX_ID, sorted by id) into an
    Arrow IPC file at `uri` in record batches of payload.BATCH_ROWS: the rows of `previous` not in
    the work shards `drop` first, then each `write`."""

    def __init__(
        self,
        uri: str,
        previous: shard_index.ShardEntry | None,
        drop: list[int],
        index_dir: str,
        cfg: IndexConfig,
        storage: StorageConfig,
        rerank: bool,
    ):
        self.uri, self.storage, self.writer, self.pending = uri, storage, None, []
        self.rerank, self.finished = rerank, False
        handle, self.local = tempfile.mkstemp(suffix=".arrow")
        os.close(handle)
        if previous is not None:
            kept = payload.read(local_copy(join(index_dir, previous.payload_file), cfg.local_cache, storage))
            ids = kept[payload.INDEX_ID].to_numpy()
            self.write(kept.filter(pa.array(~np.isin(shard_index.work_shard_of(ids), drop))))

    def write(self, table: pa.Table) -> None:
        self.pending.append(table)
        if sum(t.num_rows for t in self.pending) >= payload.BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        table = pa.concat_tables(self.pending).combine_chunks() if self.pending else None
        self.pending = []
        if table is None:
            return
        if self.writer is None:
            self.schema = table.schema
            self.writer = pa.ipc.new_file(self.local, self.schema)
        self.writer.write_table(table.cast(self.schema), max_chunksize=payload.BATCH_ROWS)

    def __enter__(self) -> PayloadWriter:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.finish()
            put_file(self.local, self.uri, self.storage)
        else:
            if self.writer is not None and not self.finished:
                self.writer.close()
            os.remove(self.local)

    def finish(self) -> str:
        """Complete the local file (sorted by id when an update interleaved kept and added rows)
        and return its path; `__exit__` then puts it at its uri. Called again, it does nothing."""
        if self.finished:
            return self.local
        self.flush()
        if self.writer is None:
            pa.ipc.new_file(self.local, payload.schema(0, "float16", self.rerank)).close()
        else:
            self.writer.close()
            table = payload.read(self.local)
            order = np.argsort(table[payload.INDEX_ID].to_numpy(), kind="stable")
            if (np.diff(order) < 0).any():
                with pa.ipc.new_file(self.local + ".sorted", table.schema) as out:
                    for start in range(0, len(order), payload.BATCH_ROWS):
                        out.write_table(table.take(pa.array(order[start : start + payload.BATCH_ROWS])))
                del table
                os.replace(self.local + ".sorted", self.local)
        self.finished = True
        return self.local


RUNTIME_SETTINGS = ("use_gpu", "local_cache", "num_cpus", "num_gpus")  # where and on what it runs
SEARCH_SETTINGS = ("nprobe", "target_recall")  # the manifest's nprobe, not the shards' contents


def settings_digest(cfg: IndexConfig, leave_out: tuple[str, ...]) -> str:
    """Digest of the index settings other than `leave_out`."""
    kept = {k: v for k, v in asdict(cfg).items() if k not in leave_out}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:32]


def read_manifest(index_dir: str, storage: StorageConfig) -> shard_index.IndexManifest | None:
    """The index under `index_dir` when its manifest exists and all its files do, else None."""
    try:
        manifest = shard_index.load_manifest(index_dir, storage)
    except FileNotFoundError:
        return None
    fs, root = filesystem(index_dir, storage)
    names = [n for s in manifest.shards for n in (s.index_file, s.payload_file)] + [manifest.template_file]
    present = all(info.type == pafs.FileType.File for info in fs.get_file_info([f"{root}/{n}" for n in names]))
    return manifest if present else None


def updatable(
    old: shard_index.IndexManifest | None,
    settings: str,
    dim: int,
    dtype: str,
    rows_per_work_shard: list[int],
    cfg: IndexConfig,
) -> index_plan.IndexPlan | None:
    """The plan of updating `old` in place, or None when it must be rebuilt (module docstring)."""
    if old is None or (old.params.get("settings"), old.dim, old.params.get("dtype")) != (settings, dim, dtype):
        return None
    if old.trained_at_rows and sum(rows_per_work_shard) > cfg.retrain_growth * old.trained_at_rows:
        return None
    budget = int(cfg.memory_budget_gb * 2**30)
    try:
        kept = index_plan.plan(rows_per_work_shard, dim, old.params["dtype"], budget, cfg.shards, old.index_type)
    except ValueError:
        return None
    return kept if kept.shards == len(old.shards) else None


def build(
    output: str, crops: dict[int, ShardCommit], work_shards: int, cfg: IndexConfig, storage: StorageConfig
) -> shard_index.IndexManifest:
    """The index of the committed crop work shards `crops` (of `work_shards`) under `output/index`:
    kept, updated or rebuilt (module docstring), with the manifest written last and the files of
    earlier generations removed after it."""
    index_dir = join(output, INDEX_DIR)
    settings = settings_digest(cfg, RUNTIME_SETTINGS + SEARCH_SETTINGS)
    digests = {w: work_shard_digest(c) for w, c in crops.items()}
    source = hashlib.sha256(
        json.dumps([sorted(digests.items()), settings_digest(cfg, RUNTIME_SETTINGS)]).encode()
    ).hexdigest()
    old = read_manifest(index_dir, storage)
    if old is not None and old.source == source:
        print(f"[lookbook-miner] index: {index_dir} is up to date with the crop files, kept", flush=True)
        return old
    files, dim, dtype = crop_files(output, crops, storage)
    rows = [0] * work_shards
    for f in files:
        rows[f.work_shard] += f.rows
    update = updatable(old, settings, dim, dtype, rows, cfg)
    budget = int(cfg.memory_budget_gb * 2**30)
    generation = (old.generation + 1) if old else 1
    resources = {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus}
    measured = {}
    if update:
        chosen = update
        template_file, train_rows, trained_at = old.template_file, old.train_rows, old.trained_at_rows
        template = read_bytes(join(index_dir, template_file), storage, 2**40)
        before = old.work_shards()
        changed = {w for w in digests if before.get(w) != digests[w]} | (set(before) - set(digests))
    else:
        if not sum(rows):
            factories = ["Flat"]  # nothing to train a type on
        elif cfg.factory == "auto":
            factories = index_plan.factory_candidates(sum(rows), dim, dtype)
        else:
            factories = [cfg.factory]
        nlist = index_plan.index_spec(factories[0], max(dim, 1)).nlist
        sample = index_plan.train_rows(nlist, sum(rows), cfg.train_sample) if nlist else 0
        task = _train.options(**resources).remote(files, factories, sample, max(dim, 1), cfg, storage)
        template, factory, train_rows, measured = ray.get(task)
        chosen = index_plan.plan(rows, max(dim, 1), dtype, budget, cfg.shards, factory)
        template_file, trained_at = f"template.g{generation:05d}.faiss", sum(rows)
        write_bytes(join(index_dir, template_file), template, storage)
        changed = set(range(work_shards))
    tasks = {}
    for s in range(chosen.shards):
        mine = sorted(w for w in changed if shard_index.index_shard_of(w, chosen.shards) == s)
        if update and not mine:
            continue
        shard_digests = {
            str(w): digests[w] for w in sorted(digests) if shard_index.index_shard_of(w, chosen.shards) == s
        }
        names = (f"shard-{s:05d}.g{generation:05d}.faiss", f"shard-{s:05d}.g{generation:05d}.arrow")
        previous = old.shards[s] if update else None
        todo = [f for f in files if f.work_shard in mine]
        tasks[s] = _fill.options(**resources).remote(
            s, previous, mine, todo, shard_digests, template, chosen.factory, names, index_dir, cfg, storage
        )
    entries = dict(zip(tasks, ray.get(list(tasks.values()))))
    shards = [entries.get(s) or old.shards[s] for s in range(chosen.shards)]
    nprobe, recall = index_plan.choose_nprobe([s.recall for s in shards], [s.rows for s in shards], cfg.target_recall)
    if recall < cfg.target_recall:
        warnings.warn(
            f"index recall@10 {recall:.3f} stays below index.target_recall {cfg.target_recall} at nprobe {nprobe}",
            stacklevel=2,
        )
    manifest = shard_index.IndexManifest(
        index_type=chosen.factory,
        dim=dim,
        metric=shard_index.METRIC,
        nprobe=cfg.nprobe or nprobe,
        shards=shards,
        rows=sum(rows),
        train_rows=train_rows,
        trained_at_rows=trained_at,
        template_file=template_file,
        generation=generation,
        params={
            **chosen.params(budget, "auto" if cfg.factory == "auto" else "config"),
            "settings": settings,
            "dtype": dtype,
            "measured_recall": recall,
            "rerank_depth": cfg.rerank_depth if reranked(chosen.factory) else 0,
            "type_measurements": old.params.get("type_measurements", {}) if update else measured,
            "built": "updated" if update else "rebuilt",
        },
        source=source,
    )
    manifest.check()
    write_bytes(join(index_dir, shard_index.MANIFEST), manifest.to_json().encode(), storage)
    _remove_unreferenced(index_dir, manifest, storage)
    how = f"updated {sorted(tasks)} of {chosen.shards} shards" if update else f"built {chosen.shards} shards"
    done = f"{how} of {chosen.factory}, {manifest.rows} rows, nprobe {manifest.nprobe} (recall@10 {recall:.3f})"
    print(f"[lookbook-miner] index: {done}", flush=True)
    return manifest


def _remove_unreferenced(index_dir: str, manifest: shard_index.IndexManifest, storage: StorageConfig) -> None:
    """Delete the shard and template files of earlier generations (the manifest no longer names them)."""
    fs, root = filesystem(index_dir, storage)
    keep = {n for s in manifest.shards for n in (s.index_file, s.payload_file)} | {
        manifest.template_file,
        shard_index.MANIFEST,
    }
    for info in fs.get_file_info(pafs.FileSelector(root)):
        if info.type == pafs.FileType.File and info.base_name not in keep:
            fs.delete_file(info.path)


def index_run(cfg: MineConfig, crops: dict[int, ShardCommit]) -> shard_index.IndexManifest:
    """`build` over the crop files of the run's committed lookbook shards `crops`, into `<output>/index`."""
    return build(cfg.output, crops, cfg.work.shards, cfg.index, cfg.storage)
