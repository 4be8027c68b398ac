import hashlib
import json
import subprocess
import sys
import textwrap

import polars as pl

from lakeloom.engine.cache.store import ResponseCache

RESPONSE = json.dumps({"choices": [{"message": {"content": "hi"}}]})


def key(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()[:32]


def test_append_is_visible_before_and_after_flush(storage):
    cache = ResponseCache(storage)
    cache.append(key(1), "m", "chat.completions", RESPONSE, 10, 2)
    assert cache.pending == 1
    found = cache.match([key(2), key(1), key(3)])
    assert found["request_hash"].to_list() == [key(2), key(1), key(3)]
    assert found["response"].to_list() == [None, RESPONSE, None]
    assert cache.flush() == 1 and cache.pending == 0
    assert list(cache.journal_dir.glob("*.jsonl")) == []  # committed, so the journal is gone
    again = ResponseCache(storage).match([key(1), key(1)])
    assert again["input_tokens"].to_list() == [10, 10] and again["model"].to_list() == ["m"] * 2
    assert cache.stats.hits == 1 and cache.stats.misses == 2


def test_lookup_dedupes_and_models_prune(storage):
    cache = ResponseCache(storage)
    cache.append(key(1), "a/b", "chat.completions", RESPONSE, 1, 1)
    cache.flush()
    cache.append(key(1), "a/b", "chat.completions", RESPONSE, 1, 1)  # a second writer's copy
    cache.append(key(2), "c", "embeddings", RESPONSE, 1, 0)
    cache.flush()
    assert cache.lookup([key(1), key(2)]).height == 2
    assert cache.match([key(1), key(2)], models=["a/b"])["response"].null_count() == 1


def test_orphaned_journal_of_a_killed_writer_is_replayed(storage, tmp_path):
    script = textwrap.dedent(
        f"""
        import hashlib, os, signal
        from lakeloom.engine.cache.store import ResponseCache
        from lakeloom.storage.settings import Storage
        cache = ResponseCache(Storage(root={storage.root!r}), flush_every=10**9)
        for i in range(5):
            key = hashlib.sha256(str(i).encode()).hexdigest()[:32]
            cache.append(key, "m", "chat.completions", {RESPONSE!r}, 3, 1)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], timeout=60)
    assert proc.returncode == -9
    cache = ResponseCache(storage)  # opening replays what the dead writer journaled
    assert cache.replayed == 5
    assert cache.match([key(i) for i in range(6)])["response"].null_count() == 1
    assert list(cache.journal_dir.glob("*.jsonl")) == []
    assert ResponseCache(storage).replayed == 0  # and only once


def test_live_journal_is_left_alone_and_torn_lines_skipped(storage):
    writer = ResponseCache(storage, flush_every=10**9)
    writer.append(key(1), "m", "chat.completions", RESPONSE, 1, 1)
    other = ResponseCache(storage)
    assert other.replayed == 0  # the writer still holds its journal lock
    torn = other.journal_dir / "999-torn.jsonl"
    good = json.dumps([key(7), "m", "chat.completions", 1, 1, 0, RESPONSE])
    torn.write_text(good + "\n" + good[:20])  # a crash mid-line
    assert ResponseCache(storage).replayed == 1
    writer.close()
    assert ResponseCache(storage).match([key(1), key(7)])["response"].null_count() == 0


def test_compaction_merges_small_files(storage):
    cache = ResponseCache(storage, compact_min_files=4)
    for i in range(6):
        cache.append(key(i), "m", "chat.completions", RESPONSE, 1, 1)
        cache.flush()
    assert cache.file_count() == 6
    assert cache.compact()
    assert cache.file_count() == 1
    assert cache.match([key(i) for i in range(6)])["response"].null_count() == 0
    assert not cache.compact()  # below the threshold now


def test_put_bulk_skips_known_keys(storage):
    cache = ResponseCache(storage)
    cache.append(key(1), "m", "chat.completions", RESPONSE, 1, 1)
    cache.flush()
    frame = pl.DataFrame(
        {
            "request_hash": [key(1), key(2), key(2)],
            "model": "m",
            "endpoint": "chat.completions",
            "response": RESPONSE,
            "input_tokens": 4,
            "output_tokens": 2,
        }
    )
    assert cache.put(frame) == 1
    assert cache.lookup([key(1), key(2)]).height == 2


def test_keys_sharing_their_first_64_bits_are_still_told_apart(storage):
    cache = ResponseCache(storage)
    twins = ["0" * 16 + f"{i:016x}" for i in range(3)]
    for i, k in enumerate(twins[:2]):
        cache.append(k, "m", "chat.completions", json.dumps({"n": i}), i, 0)
    cache.flush()
    found = cache.match([twins[1], twins[2], twins[0]])
    assert found["response"].to_list() == ['{"n": 1}', None, '{"n": 0}']


def _cache_of(storage, n: int, files: int, *, sorted_slices: bool) -> ResponseCache:
    """``n`` responses in ``files`` Delta files: key-range slices (as a bulk import or a sorted
    rewrite lays them out) or random keys per file (as flushes of a run do)."""
    keys = [key(i) for i in range(n)]
    if sorted_slices:
        keys.sort()
    cache = ResponseCache(storage)
    size = n // files
    for f in range(files):
        chunk = keys[f * size : (f + 1) * size]
        cache.put(
            pl.DataFrame(
                {
                    "request_hash": chunk,
                    "model": "m",
                    "endpoint": "chat.completions",
                    "response": RESPONSE,
                    "input_tokens": 1,
                    "output_tokens": 1,
                }
            )
        )
    assert cache.file_count() == files
    return cache


def test_a_lookup_of_a_few_keys_reads_only_their_files_and_rows(storage):
    cache = _cache_of(storage, 5000, 10, sorted_slices=True)
    fresh = ResponseCache(storage)
    wanted = [key(7), key(4242), key(999_999)]  # two cached, one not
    found = fresh.match(wanted)
    assert found["response"].null_count() == 1
    assert fresh.scan_stats.files_total == 10
    assert fresh.scan_stats.files_read <= len(wanted)  # only files whose key range holds one
    assert fresh.scan_stats.rows_read == 2  # not the 5,000 cached responses
    assert cache.match([key(12_345)])["response"].null_count() == 1


def test_a_lookup_materializes_only_matching_rows_whatever_the_layout(storage):
    _cache_of(storage, 4000, 4, sorted_slices=False)  # every file spans the whole key range
    fresh = ResponseCache(storage)
    assert fresh.lookup([key(i) for i in range(0, 4000, 400)]).height == 10
    assert fresh.scan_stats.rows_read == 10
    assert fresh.match([key(1)], models=["other"])["response"].null_count() == 1
    assert fresh.scan_stats.files_read == 4  # the model partition pruned the second lookup
