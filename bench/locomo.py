"""Recall on LoCoMo (issue 20): each dialog turn one memory ("<speaker>: <text>"), one namespace per conversation;
for each answerable question (categories 1-4 with evidence) recall k memories; a question scores the share of its
evidence turns among them (the README's scoring in ../shared/eval/). Side by side in one run, on the same turns:

- Marrow `Memory.recall` in each mode (hybrid, vector, keyword), over Flight from Python, the question embedded by
  the server; and hybrid again with the query vector given, as LanceDB gets it;
- BM25 from PyPI `bm25s` (English stop words), in process;
- exact dense: cosine over the same all-MiniLM-L6-v2 vectors Marrow stored, numpy, in process;
- LanceDB 0.40 hybrid search (`query_type="hybrid"`, RRF reranker, its own FTS index) on the same vectors and texts.

Usage: bench/locomo.sh [EVAL_DIR]   (prints R@5, R@10 and recall latency p50/p95 per retriever)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import marrow
import numpy as np
from _server import start, stop
from marrow import Memory

K = (5, 10)


def load(eval_dir: Path) -> list[dict]:
    convs = []
    for f in sorted(eval_dir.glob("*.json")):
        d = json.loads(f.read_text())
        turns = []
        n = 1
        while f"session_{n}" in d:
            for t in d[f"session_{n}"]:
                turns.append((t["dia_id"], f"{t['speaker']}: {t['text']}"))
            n += 1
        qa = [
            q
            for q in d["qa"]
            if q.get("category") in (1, 2, 3, 4) and q.get("evidence")
        ]
        convs.append({"name": f.stem, "turns": turns, "qa": qa})
    return convs


class Loaded(NamedTuple):
    db: marrow.Client
    mem: Memory
    questions: list[tuple[str, str]]  # (namespace, question)
    vectors: list[Any]  # each question's embedding, by the server
    memories: int


@contextmanager
def two_conversations(binary: str, eval_dir: Path, questions: int) -> Iterator[Loaded]:
    """A `marrow serve` holding the first two LoCoMo conversations' turns as memories (one namespace each, then
    OPTIMIZE), a one-call client with its `Memory` (access log off), and the first `questions` questions with their
    vectors: the setup of the recall-latency benchmarks."""
    convs = load(eval_dir)[:2]
    with tempfile.TemporaryDirectory() as d:
        proc, uri = start(binary, Path(d) / "data")
        try:
            with marrow.connect(uri, one_call=True) as db:
                mem = Memory(db, access_log="off")
                for c in convs:
                    mem.remember_many([t for _, t in c["turns"]], namespace=c["name"])
                db.sql("OPTIMIZE TABLE memories")
                qs = [(c["name"], q["question"]) for c in convs for q in c["qa"]][:questions]
                vs = [db.scalar("SELECT embed($1)", [q]) for _, q in qs]
                yield Loaded(db, mem, qs, vs, sum(len(c["turns"]) for c in convs))
        finally:
            stop(proc)


def score(found: list[str], evidence: list[str], k: int) -> float:
    top = set(found[:k])
    return sum(1 for e in set(evidence) if e in top) / len(set(evidence))


class Tally:
    def __init__(self) -> None:
        self.scores = {k: [] for k in K}
        self.latency: list[float] = []

    def add(self, found: list[str], evidence: list[str], seconds: float) -> None:
        for k in K:
            self.scores[k].append(score(found, evidence, k))
        self.latency.append(seconds)

    def row(self, name: str) -> str:
        ms = np.array(self.latency) * 1000
        return (
            f"| {name} | {np.mean(self.scores[5]):.3f} | {np.mean(self.scores[10]):.3f} | "
            f"{np.percentile(ms, 50):.2f} | {np.percentile(ms, 95):.2f} |"
        )


def main() -> None:
    binary, eval_dir = sys.argv[1], Path(sys.argv[2])
    convs = load(eval_dir)
    n_q = sum(len(c["qa"]) for c in convs)
    print(
        f"{len(convs)} conversations, {sum(len(c['turns']) for c in convs)} turns, {n_q} questions"
    )
    tallies: dict[str, Tally] = {}

    def tally(name: str) -> Tally:
        return tallies.setdefault(name, Tally())

    with tempfile.TemporaryDirectory() as d:
        proc, uri = start(binary, Path(d) / "data")
        try:
            with marrow.connect(uri, one_call=True) as db:
                mem = Memory(db)
                vectors: dict[str, tuple[list[str], np.ndarray]] = {}
                for c in convs:
                    ids = mem.remember_many(
                        [t for _, t in c["turns"]], namespace=c["name"]
                    )
                    dia = dict(zip(ids, (i for i, _ in c["turns"])))
                    c["dia"] = dia
                    emb = db.sql(
                        "SELECT id, embedding FROM memories WHERE namespace = $1",
                        [c["name"]],
                    )
                    order = emb.column("id").to_pylist()
                    vectors[c["name"]] = (
                        [dia[i] for i in order],
                        np.array(emb.column("embedding").to_pylist(), dtype=np.float32),
                    )
                db.sql("OPTIMIZE TABLE memories")
                for mode in ("hybrid", "vector", "keyword"):
                    for c in convs:
                        for q in c["qa"]:
                            t = time.perf_counter()
                            hits = mem.recall(
                                q["question"],
                                c["name"],
                                k=10,
                                mode=mode,
                                log_access=False,
                            )
                            tally(f"Marrow recall, {mode}").add(
                                [c["dia"][h.id] for h in hits],
                                q["evidence"],
                                time.perf_counter() - t,
                            )
                # Query vectors from the same model, for the in-process dense baseline and LanceDB.
                qvec = {}
                for c in convs:
                    for q in c["qa"]:
                        qvec[(c["name"], q["question"])] = np.array(
                            mem.query_vector(q["question"]), np.float32
                        )
                # As LanceDB is measured: the query vector given, no embedding on the way.
                for c in convs:
                    for q in c["qa"]:
                        t = time.perf_counter()
                        v = qvec[(c["name"], q["question"])]
                        hits = mem.recall(
                            q["question"],
                            c["name"],
                            k=10,
                            embedding=v,
                            log_access=False,
                        )
                        tally("Marrow recall, hybrid, query vector given").add(
                            [c["dia"][h.id] for h in hits],
                            q["evidence"],
                            time.perf_counter() - t,
                        )
        finally:
            stop(proc)

    import bm25s

    for c in convs:
        corpus = [t for _, t in c["turns"]]
        retriever = bm25s.BM25()
        retriever.index(
            bm25s.tokenize(corpus, stopwords="en", show_progress=False),
            show_progress=False,
        )
        for q in c["qa"]:
            t = time.perf_counter()
            docs, _ = retriever.retrieve(
                bm25s.tokenize([q["question"]], stopwords="en", show_progress=False),
                k=10,
                show_progress=False,
            )
            found = [c["turns"][int(i)][0] for i in docs[0]]
            tally("BM25 (bm25s 0.3, English stop words)").add(
                found, q["evidence"], time.perf_counter() - t
            )
        dia, emb = vectors[c["name"]]
        normed = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        for q in c["qa"]:
            t = time.perf_counter()
            v = qvec[(c["name"], q["question"])]
            sims = normed @ (v / np.linalg.norm(v))
            found = [dia[i] for i in np.argsort(-sims)[:10]]
            tally("exact dense (same vectors, numpy)").add(
                found, q["evidence"], time.perf_counter() - t
            )

    import lancedb
    import pyarrow as pa
    from lancedb.rerankers import RRFReranker

    with tempfile.TemporaryDirectory() as d:
        ldb = lancedb.connect(d)
        for c in convs:
            dia, emb = vectors[c["name"]]
            text = dict(c["turns"])
            table = ldb.create_table(
                f"c{c['name']}",
                pa.table(
                    {
                        "dia": dia,
                        "text": [text[i] for i in dia],
                        "vector": pa.FixedSizeListArray.from_arrays(
                            pa.array(emb.ravel()), emb.shape[1]
                        ),
                    }
                ),
            )
            table.create_fts_index("text")
            reranker = RRFReranker()
            for q in c["qa"]:
                t = time.perf_counter()
                rows = (
                    table.search(query_type="hybrid")
                    .vector(qvec[(c["name"], q["question"])].tolist())
                    .text(q["question"])
                    .rerank(reranker)
                    .limit(10)
                    .to_list()
                )
                found = [r["dia"] for r in rows]
                tally("LanceDB 0.40 hybrid (RRF)").add(
                    found, q["evidence"], time.perf_counter() - t
                )

    print("\n| retriever | R@5 | R@10 | p50 ms | p95 ms |\n|---|---|---|---|---|")
    for name, t in tallies.items():
        print(t.row(name))


if __name__ == "__main__":
    main()
