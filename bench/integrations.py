"""Issue 24's measurement: what the integration layers add to a recall. On ``--rows`` memories (default 100,000) in
one namespace, the same ``--queries`` questions (server-side embedding in every case) are recalled:

- hybrid: ``marrow.Memory.recall`` directly, then the MCP server's ``recall`` tool over stdio (``python -m
  marrow.mcp``, driven by the ``mcp`` SDK's client);
- vector: ``Memory.recall(mode="vector")`` directly, then LangChain's ``MarrowVectorStore.similarity_search`` over
  a table holding the same rows and vectors.

Usage: bench/integrations.sh [MARROW_BINARY] [--rows N] [--queries N]   (prints p50/p95 per path)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import marrow
import numpy as np
import pyarrow as pa
from _server import start, stop
from marrow import Memory
from marrow.langchain import MarrowVectorStore
from mcp import Client as McpClient
from mcp.client.stdio import StdioServerParameters

DIM = 384
PATHS = ("hybrid", "mcp", "vector", "langchain")
WORDS = [
    "tea",
    "coffee",
    "Lyon",
    "Paris",
    "rain",
    "garden",
    "chess",
    "piano",
    "guitar",
    "dog",
    "cat",
    "birthday",
    "meeting",
    "doctor",
    "train",
    "flight",
    "hotel",
    "book",
    "movie",
    "recipe",
    "pasta",
    "sushi",
    "marathon",
    "yoga",
    "camera",
    "painting",
    "river",
    "mountain",
    "beach",
    "winter",
    "summer",
    "project",
    "deadline",
    "sister",
    "brother",
    "mother",
    "father",
    "friend",
    "neighbour",
    "school",
    "office",
    "museum",
    "concert",
]


def corpus(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    texts = [f"note {i}: " + " ".join(rng.choice(WORDS, 8)) for i in range(n)]
    centroids = rng.standard_normal((1000, DIM)).astype(np.float32)
    x = centroids[rng.integers(0, 1000, n)] + 0.3 * rng.standard_normal(
        (n, DIM)
    ).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return texts, x


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.array(xs) * 1000, p))


def row(name: str, xs: list[float]) -> str:
    return f"| {name} | {pct(xs, 50):.2f} | {pct(xs, 95):.2f} |"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=205)
    args = parser.parse_args()
    texts, vectors = corpus(args.rows, 7)
    rng = np.random.default_rng(11)
    questions = [
        f"what about the {a} and the {b}? ({i})"
        for i, (a, b) in enumerate(rng.choice(WORDS, (args.queries, 2)))
    ]
    results: list[str] = []
    with tempfile.TemporaryDirectory() as d:
        proc, uri = start(args.binary, Path(d) / "data")
        try:
            with marrow.connect(uri) as db:
                mem = Memory(db, access_log="off")
                t = time.perf_counter()
                for s in range(0, args.rows, 5_000):
                    mem.remember_many(
                        [
                            {"content": c, "embedding": v}
                            for c, v in zip(
                                texts[s : s + 5_000],
                                vectors[s : s + 5_000],
                                strict=True,
                            )
                        ],
                        "bench",
                    )
                store = MarrowVectorStore(db, "lc_bench")
                store._ensure_table(DIM)
                emb = pa.FixedSizeListArray.from_arrays(
                    pa.array(vectors.ravel(), pa.float32()), DIM
                )
                for s in range(0, args.rows, 5_000):
                    db.ingest(
                        "lc_bench",
                        pa.table(
                            {
                                "id": [
                                    f"d{i}" for i in range(s, min(s + 5_000, args.rows))
                                ],
                                "content": texts[s : s + 5_000],
                                "metadata": ["{}"] * len(texts[s : s + 5_000]),
                                "embedding": emb.slice(s, 5_000),
                            }
                        ),
                    )
                db.sql("OPTIMIZE TABLE memories")
                db.sql("OPTIMIZE TABLE lc_bench")
                print(
                    f"loaded {args.rows} rows twice in {time.perf_counter() - t:.1f} s",
                    file=sys.stderr,
                )

                async def measure() -> dict[str, list[float]]:
                    # Interleaved per question, so caches and background upkeep weigh on every path alike; each path
                    # asks its own wording, so no path finds the question's embedding cached by another.
                    params = StdioServerParameters(
                        command=sys.executable, args=["-m", "marrow.mcp", "--uri", uri]
                    )
                    out: dict[str, list[float]] = {name: [] for name in PATHS}
                    async with McpClient(params) as c:
                        for n, q in enumerate(questions):
                            for name in PATHS:
                                text = f"{q} [{name[:3]}]"
                                t = time.perf_counter()
                                if name == "hybrid":
                                    mem.recall(text, "bench", k=5)
                                elif name == "mcp":
                                    r = await c.call_tool(
                                        "recall",
                                        {"query": text, "namespace": "bench", "k": 5},
                                    )
                                    assert not r.is_error, r.content
                                elif name == "vector":
                                    mem.recall(text, "bench", k=5, mode="vector")
                                else:
                                    store.similarity_search(text, k=5)
                                if n >= 5:  # the first five warm up
                                    out[name].append(time.perf_counter() - t)
                    return out

                times = asyncio.run(measure())
        finally:
            stop(proc)
    results += [
        row("`Memory.recall`, hybrid (direct)", times["hybrid"]),
        row("MCP `recall` tool over stdio, hybrid", times["mcp"]),
        row("`Memory.recall`, vector (direct)", times["vector"]),
        row(
            "LangChain `MarrowVectorStore.similarity_search` (vector)",
            times["langchain"],
        ),
    ]
    print(
        f"\n{args.rows} memories, {args.queries} questions, k = 5, the question embedded by the server each time\n"
    )
    print("| path | p50 ms | p95 ms |\n|---|---|---|")
    print("\n".join(results))


if __name__ == "__main__":
    main()
