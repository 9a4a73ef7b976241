"""embed() and the tokenizer functions against independent references: the Python `tokenizers` package configured the
same way, and a numpy forward pass of all-MiniLM-L6-v2 written here from the same safetensors file."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import adbc_driver_manager
import numpy as np
import pyarrow as pa
import pytest
from tokenizers import Tokenizer

import marrow


def _load_safetensors(path: Path) -> dict[str, np.ndarray]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        dtype = {"F32": np.float32, "I64": np.int64}[meta["dtype"]]
        out[name] = np.frombuffer(raw[8 + n + start : 8 + n + end], dtype=dtype).reshape(meta["shape"])
    return out


class NumpyMiniLM:
    """BERT encoder + mean pooling + L2 normalization, in float64."""

    def __init__(self, directory: Path):
        self.w = {k: v.astype(np.float64) for k, v in _load_safetensors(directory / "model.safetensors").items()}
        cfg = json.loads((directory / "config.json").read_text())
        self.layers, self.heads, self.eps = cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["layer_norm_eps"]

    def _ln(self, x, p):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self.eps) * self.w[p + ".weight"] + self.w[p + ".bias"]

    def _lin(self, x, p):
        return x @ self.w[p + ".weight"].T + self.w[p + ".bias"]

    def embed(self, ids: list[int]) -> np.ndarray:
        w, n = self.w, len(ids)
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n]
        x = self._ln(x + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
        erf = np.vectorize(math.erf)
        for i in range(self.layers):
            p = f"encoder.layer.{i}"
            q, k, v = (self._lin(x, f"{p}.attention.self.{m}") for m in ("query", "key", "value"))
            d = q.shape[1] // self.heads
            ctx = np.empty_like(q)
            for h in range(self.heads):
                s = slice(h * d, (h + 1) * d)
                scores = q[:, s] @ k[:, s].T / math.sqrt(d)
                scores = np.exp(scores - scores.max(-1, keepdims=True))
                ctx[:, s] = (scores / scores.sum(-1, keepdims=True)) @ v[:, s]
            x = self._ln(x + self._lin(ctx, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm")
            inner = self._lin(x, f"{p}.intermediate.dense")
            inner = 0.5 * inner * (1 + erf(inner / math.sqrt(2)))
            x = self._ln(x + self._lin(inner, f"{p}.output.dense"), f"{p}.output.LayerNorm")
        pooled = x.mean(0)
        return pooled / np.linalg.norm(pooled)


def _sentences() -> list[str]:
    base = [
        "The weather is lovely today.",
        "It's so sunny outside!",
        "He drove to the stadium.",
        "",
        " ",
        "a",
        "Rust",
        "The user prefers Rust over Python for systems work.",
        "Remember: the meeting moved to Thursday at 3pm.",
        "Café, naïve, façade, coöperate — déjà vu.",
        "Straße und Größe in München",
        "日本語のテキストも埋め込めます。",
        "中文句子测试，看看分词器如何处理。",
        "Привет, как дела? Всё хорошо.",
        "مرحبا بالعالم",
        "שלום עולם",
        "🚀🔥 launch day! 🎉🎉",
        "emoji only: 😀😃😄😁",
        "fn main() { println!(\"hello {}\", 42); }",
        "SELECT id, cosine_distance(embedding, $1) FROM memories ORDER BY 2 LIMIT 5;",
        "def f(x):\n    return x ** 2  # square",
        "<html><body><p>Hello &amp; goodbye</p></body></html>",
        "https://example.com/path?query=1&other=two#frag",
        "user@example.com wrote: >>> quoted text",
        "1234567890 3.14159 -2.71828 1e-9",
        "ALL CAPS SENTENCE WITH SHOUTING",
        "MiXeD cAsE tExT",
        "tab\tseparated\tvalues",
        "line one\nline two\r\nline three",
        "   leading and trailing spaces   ",
        "punctuation!!! ??? ... ,,, ;;; ---",
        "unbelievably antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    ]
    long_words = " ".join(f"word{i} is followed by another phrase" for i in range(120))
    base += [long_words, "Repeat " * 400, ("The quick brown fox jumps over the lazy dog. " * 40).strip()]
    topics = ["memory", "database", "vector", "agent", "model", "query", "index", "embedding", "token", "cache"]
    verbs = ["stores", "retrieves", "ranks", "forgets", "updates", "compresses", "searches", "explains"]
    for i in range(80):
        t1, t2 = topics[i % len(topics)], topics[(i * 7 + 3) % len(topics)]
        v = verbs[(i * 3) % len(verbs)]
        base.append(f"Sentence {i}: the {t1} {v} the {t2} {'quickly' if i % 2 else 'carefully'} ({i * i}).")
    return base


@pytest.fixture(scope="module")
def reference(model_dir):
    d = model_dir
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return d, tok, NumpyMiniLM(d)


def test_tokenize_matches_python_tokenizers(server, reference):
    _, tok, _ = reference
    sentences = _sentences()
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        cur.adbc_ingest("s", pa.table({"i": list(range(len(sentences))), "t": sentences}), mode="create")
        cur.execute("SELECT i, tokenize(t), token_count(t), detokenize(tokenize(t)) FROM s ORDER BY i")
        rows = cur.fetchall()
    assert len(rows) == len(sentences)
    for (i, ids, count, text), sentence in zip(rows, sentences):
        expected = tok.encode(sentence)
        assert ids == expected.ids, sentence
        assert count == len(expected.ids)
        assert text == tok.decode(expected.ids, skip_special_tokens=True)
    assert any(c > 256 for _, _, c, _ in rows), "the corpus must include inputs longer than 256 tokens"


def test_embed_matches_numpy_reference(server, reference, model_dir):
    _, tok, ref = reference
    tok_256 = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok_256.no_padding()
    tok_256.enable_truncation(256)
    sentences = _sentences()
    assert len(sentences) >= 100
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        cur.adbc_ingest("s", pa.table({"i": list(range(len(sentences))), "t": sentences}), mode="create")
        cur.execute("SELECT i, embed(t) FROM s ORDER BY i")
        table = cur.fetch_arrow_table()
    got = np.array(table.column(1).to_pylist(), dtype=np.float64)
    assert got.shape == (len(sentences), 384)
    worst = 1.0
    for sentence, vec in zip(sentences, got):
        want = ref.embed(tok_256.encode(sentence).ids)
        cos = float(vec @ want / np.linalg.norm(vec))
        worst = min(worst, cos)
        assert cos >= 0.9999, (sentence[:60], cos)
    print(f"worst cosine similarity vs numpy reference over {len(sentences)} sentences: {worst:.7f}")


def test_published_similarities_and_null(server):
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT round(1 - cosine_distance(embed('The weather is lovely today.'), embed('It''s so sunny outside!')), 4), "
            "round(1 - cosine_distance(embed('The weather is lovely today.'), embed('He drove to the stadium.')), 4), "
            "embed(NULL) IS NULL, vector_norm(embed(''))"
        )
        sunny, stadium, null_ok, empty_norm = cur.fetchone()
    assert sunny == pytest.approx(0.6660, abs=1e-4)
    assert stadium == pytest.approx(0.1046, abs=1e-4)
    assert null_ok is True
    assert empty_norm == pytest.approx(1.0, abs=1e-5)


def test_memories_embed_on_write_and_search_by_text(server):
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO memories (id, content) VALUES ('m1', 'The user prefers Rust for systems programming'), "
            "('m2', 'The user is allergic to peanuts'), ('m3', 'Weekly sync moved to Thursday')"
        )
        cur.execute("SELECT count(*) FROM memories WHERE embedding IS NULL")
        assert cur.fetchone() == (0,)
        cur.execute("SELECT max(cosine_distance(embedding, embed(content))) FROM memories")
        assert cur.fetchone()[0] < 1e-6
        cur.execute(
            "SELECT id FROM memories ORDER BY cosine_distance(embedding, embed('what language does the user like?')) LIMIT 1"
        )
        assert cur.fetchone() == ("m1",)
        cur.execute("EXPLAIN SELECT id FROM memories ORDER BY cosine_distance(embedding, embed('food allergy')) LIMIT 1")
        plans = dict(zip(*cur.fetch_arrow_table().to_pydict().values()))
        assert "embed(" not in plans["physical_plan"], "embed() of a constant must be computed once, at planning"
        assert "VectorSearchExec" in plans["physical_plan"]
        # An UPDATE that changes the content recomputes the embedding.
        cur.execute("UPDATE memories SET content = 'The user now prefers Zig' WHERE id = 'm1'")
        cur.execute("SELECT cosine_distance(embedding, embed('The user now prefers Zig')) FROM memories WHERE id = 'm1'")
        assert cur.fetchone()[0] < 1e-6
        # adbc_ingest without an embedding column gets one too.
        cur.adbc_ingest("memories", pa.table({"id": ["m4"], "content": ["Ingested without a vector"]}), mode="append")
        cur.execute("SELECT embedding IS NOT NULL FROM memories WHERE id = 'm4'")
        assert cur.fetchone() == (True,)


def test_text_function_errors(server):
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as e:
            cur.execute("SELECT tokenize('hi', 'nope')")
            cur.fetchall()
        assert "unknown tokenizer 'nope'" in str(e.value) and "minilm" in str(e.value)
        with pytest.raises(adbc_driver_manager.Error) as e:
            cur.execute("SELECT detokenize([999999999])")
            cur.fetchall()
        assert "outside the vocabulary" in str(e.value)
        cur.execute("SELECT tokenize(NULL) IS NULL, token_count(NULL) IS NULL")
        assert cur.fetchone() == (True, True)
