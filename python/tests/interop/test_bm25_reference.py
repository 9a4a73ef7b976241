"""Marrow's BM25 scores against pylance's on the same rows: `fts_search` and `ORDER BY bm25(…) DESC LIMIT k` are a
reference-checked BM25.

Marrow's full-text search is Lance's (the lance 14.0.2 crates pylance 14.0.2 is built from): `CREATE INDEX … USING
INVERTED (content)` with no options builds with `InvertedIndexParams::default()`, and `fts_search` runs Lance's scanner.
So a table and a pylance dataset holding the same rows, indexed with the same parameters, must rank the same rows with
the same scores. Anything Marrow changed on the way — index options, the query text, the text analysis (tokenizer,
lower-casing, stemming, stop words, ASCII folding, the 40-character token limit), BM25's k1/b, or corpus statistics
taken over other rows than the table's — would show up as a different score. The same holds for rows appended after
the build (both sides score them with a flat search beside the index) and after the index is optimized.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import lance
import pyarrow as pa

import marrow

# Both sides run the same Rust code on the same f32 values; a few ulps of room, no more.
REL_TOL = 1e-6
# Larger than the corpus, so every matching row comes back and no tie at a k boundary decides the set.
ALL = 1000
# pylance's side of `CREATE INDEX docs_fts ON docs USING INVERTED (content)`: InvertedIndexParams::default(), spelled
# out (they are also pylance's defaults) so that a change of default on either side shows up here.
INDEX_PARAMS: dict[str, Any] = {
    "base_tokenizer": "simple",
    "language": "English",
    "with_position": False,
    "max_token_length": 40,
    "lower_case": True,
    "stem": True,
    "remove_stop_words": True,
    "ascii_folding": True,
}

COMMON = "garden river stone light morning window music bread coffee train city".split()
MIDDLING = "running runs ran quietly painted harbor harbors Harbor lantern orchard violin café Cafe meadow".split()
STOP = "the a of and in on with to is was".split()

QUERIES = [
    "garden",  # common: in about half of the rows
    "zeppelin",  # rare: two rows, one capitalized and followed by a comma
    "quasar",  # in one row only
    "river lantern",  # two words (OR): a sum of two BM25 terms
    "orchard xylophonic garden",  # a word absent from the corpus among present ones
    "Running HARBORS",  # lower-casing and stemming (running/runs → run, harbors/Harbor → harbor)
    "the cafe",  # a stop word dropped; ASCII folding (café → cafe)
    "xylophonic",  # absent: both find nothing
]


def _sentence(rng: random.Random) -> str:
    """2–28 words, about 30% stop words, 45% common words, 25% rarer ones (varied lengths: BM25's b matters)."""
    words = []
    for _ in range(rng.randint(2, 28)):
        r = rng.random()
        words.append(rng.choice(STOP if r < 0.3 else COMMON if r < 0.75 else MIDDLING))
    return " ".join(words)


def _corpus() -> tuple[pa.Table, pa.Table]:
    """300 rows to index, then 40 appended after the build; the same on every run."""
    rng = random.Random(7)
    first = [_sentence(rng) for _ in range(300)]
    first[17] += " zeppelin"
    first[203] = "Zeppelin, " + first[203]
    first[111] += " quasar!"
    first[228] = "and of the"  # stop words only: no tokens, not a document in the index's statistics
    first[42] += " " + "x" * 41 + " garden"  # a token past max_token_length is dropped: the row is shorter
    later = [_sentence(rng) for _ in range(40)]
    later[5] += " nebula quasar"  # a word only in unindexed rows, and one in both
    later[6] += " nebula"

    def table(start: int, rows: list[str]) -> pa.Table:
        return pa.table({"id": pa.array(range(start, start + len(rows)), pa.int64()), "content": rows})

    return table(0, first), table(len(first), later)


def _sql_text(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _marrow(db: marrow.Client, query: str, k: int = ALL) -> list[tuple[int, float]]:
    t = db.sql(f"SELECT id, _score FROM fts_search('docs', 'content', {_sql_text(query)}, {k})")
    return list(zip(t["id"].to_pylist(), t["_score"].to_pylist(), strict=True))


def _marrow_order_by(db: marrow.Client, query: str, k: int = ALL) -> list[tuple[int, float]]:
    """The same ranking through `ORDER BY bm25(content, $1) DESC LIMIT k`, the query bound as a parameter."""
    t = db.sql(f"SELECT id, bm25(content, $1) AS s FROM docs ORDER BY s DESC LIMIT {k}", [query])
    return list(zip(t["id"].to_pylist(), t["s"].to_pylist(), strict=True))


def _pylance(ds: lance.LanceDataset, query: str, k: int = ALL) -> list[tuple[int, float]]:
    t = ds.to_table(
        full_text_query={"query": query, "columns": ["content"]},
        columns=["id", "_score"],
        disable_scoring_autoprojection=True,
        limit=k,
    )
    return list(zip(t["id"].to_pylist(), t["_score"].to_pylist(), strict=True))


def _assert_same_scores(got: list[tuple[int, float]], want: list[tuple[int, float]], what: str) -> None:
    """Same rows, each with the same score; Marrow's best first."""
    got_by_id, want_by_id = dict(got), dict(want)
    assert len(got_by_id) == len(got), f"{what}: Marrow returned an id twice"
    assert got_by_id.keys() == want_by_id.keys(), (
        f"{what}: only in Marrow {sorted(got_by_id.keys() - want_by_id.keys())}, "
        f"only in pylance {sorted(want_by_id.keys() - got_by_id.keys())}"
    )
    off = {i: (s, want_by_id[i]) for i, s in got_by_id.items() if not math.isclose(s, want_by_id[i], rel_tol=REL_TOL)}
    assert not off, f"{what}: {len(off)} of {len(got)} scores differ (Marrow, pylance): {dict(list(off.items())[:5])}"
    scores = [s for _, s in got]
    assert scores == sorted(scores, reverse=True), f"{what}: Marrow's rows are not best first"


def _assert_all_queries_agree(db: marrow.Client, ds: lance.LanceDataset, queries: list[str], what: str) -> None:
    for q in queries:
        got = _marrow(db, q)
        _assert_same_scores(got, _pylance(ds, q), f"{what}, {q!r}")
        assert (len(got) == 0) == (q == "xylophonic"), f"{what}, {q!r}: {len(got)} rows"
        _assert_same_scores(_marrow_order_by(db, q), _pylance(ds, q), f"{what}, ORDER BY bm25, {q!r}")


def _unindexed(db: marrow.Client) -> int:
    return int(db.scalar("SELECT rows_unindexed FROM marrow_indexes() WHERE index_name = 'docs_fts'"))


def test_bm25_scores_equal_pylance(server, tmp_path: Path) -> None:
    first, later = _corpus()
    ds = lance.write_dataset(first, tmp_path / "reference.lance")
    ds.create_scalar_index("content", index_type="INVERTED", **INDEX_PARAMS)
    with marrow.connect(server.uri) as db:
        db.execute("CREATE TABLE docs (id BIGINT PRIMARY KEY, content TEXT NOT NULL)")
        assert db.ingest("docs", first) == first.num_rows
        db.execute("CREATE INDEX docs_fts ON docs USING INVERTED (content)")
        assert _unindexed(db) == 0
        _assert_all_queries_agree(db, ds, QUERIES, "indexed")
        assert [i for i, _ in _marrow(db, "zeppelin")] == [i for i, _ in _pylance(ds, "zeppelin")]

        # A small k: the k best scores, and each row with its own score (ties at the boundary may pick either row).
        for q in ("garden", "river lantern", "Running HARBORS"):
            reference = dict(_pylance(ds, q))
            best = sorted(reference.values(), reverse=True)[:5]
            got = _marrow(db, q, 5)
            assert len(got) == 5
            top = [s for _, s in got]
            assert all(math.isclose(s, b, rel_tol=REL_TOL) for s, b in zip(top, best, strict=True)), f"top 5 of {q!r}"
            assert all(math.isclose(s, reference[i], rel_tol=REL_TOL) for i, s in got), f"top 5 of {q!r}"

        # Rows written after the build: both search them (pylance unless fast_search, Marrow always) with Lance's flat
        # search beside the index. Lance scores the indexed rows with the index's statistics and the new ones with a
        # flat scorer, so these scores are not those of an index over all 340 rows — but both sides must agree.
        ds = lance.write_dataset(later, tmp_path / "reference.lance", mode="append")
        assert ds.stats.index_stats("content_idx")["num_unindexed_rows"] == later.num_rows
        db.ingest("docs", later)
        assert _unindexed(db) == later.num_rows
        _assert_all_queries_agree(db, ds, [*QUERIES, "nebula"], "with unindexed rows")
        assert {i for i, _ in _marrow(db, "nebula")} == {305, 306}

        # OPTIMIZE TABLE folds them into the index, as pylance's optimize_indices() (both with Lance's defaults).
        ds.optimize.optimize_indices()
        ds = lance.dataset(tmp_path / "reference.lance")
        assert ds.stats.index_stats("content_idx")["num_unindexed_rows"] == 0
        db.execute("OPTIMIZE TABLE docs")
        assert _unindexed(db) == 0
        _assert_all_queries_agree(db, ds, [*QUERIES, "nebula"], "after OPTIMIZE")
