"""Write the starting corpus of each fuzz target under fuzz/corpus/<target>/ (run by scripts/fuzz.sh when a target's
corpus is empty; the corpus it grows from these is committed). Deterministic: the same files on every run.

  .venv/bin/python fuzz/seed.py
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent
CORPUS = ROOT / "corpus"


def put(target: str, data: bytes) -> None:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def slt_statements() -> list[str]:
    """The statements and queries of the sqllogictest files, as written."""
    out: list[str] = []
    for f in sorted((ROOT.parent / "sql").rglob("*.slt")):
        lines = f.read_text().splitlines()
        i = 0
        while i < len(lines):
            if re.match(r"^(statement|query)\b", lines[i]):
                i += 1
                body = []
                while i < len(lines) and lines[i].strip() and lines[i].strip() != "----":
                    body.append(lines[i])
                    i += 1
                if body and sum(map(len, body)) <= 16_384:
                    out.append("\n".join(body))
            i += 1
    return out


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, value: bytes | str | int | bool) -> bytes:
    if isinstance(value, (bool, int)):
        return varint(number << 3) + varint(int(value))
    data = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(data)) + data


def command(name: str, *fields: bytes) -> bytes:
    url = "type.googleapis.com/arrow.flight.protocol.sql." + name
    return field(1, url) + field(2, b"".join(fields))


def ipc_messages(batch: pa.RecordBatch) -> bytes:
    """A schema and a batch message in the target's `[u32 header][u32 body][header][body]` framing."""
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    reader = pa.BufferReader(sink.getvalue())
    out = b""
    while True:
        try:
            m = pa.ipc.read_message(reader)
        except (StopIteration, EOFError, OSError, pa.ArrowInvalid):
            break
        header, body = m.metadata.to_pybytes(), m.body.to_pybytes() if m.body is not None else b""
        out += struct.pack("<II", len(header), len(body)) + header + body
    return out


def safetensors(tensors: dict[str, tuple[str, list[int], bytes]], metadata: dict[str, str] | None = None) -> bytes:
    header: dict[str, object] = {}
    data = b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def main() -> None:
    rng = random.Random(7)
    statements = slt_statements()
    for s in statements:
        put("sql_parse", s.encode())
        put("sql_plan", s.encode())
    for s in [
        "SELECT id, x FROM t WHERE x > $1 ORDER BY cosine_distance(v, $2) LIMIT 3",
        "SELECT s, count(*) FROM t JOIN tv USING (id) GROUP BY s HAVING count(*) > 1",
        "UPDATE t SET x = x + 1 FROM tv WHERE t.id = tv.id",
        "DELETE FROM t USING tv WHERE t.id = tv.id AND tv.s LIKE 'a%'",
        "INSERT INTO t (id, s) VALUES (2, 'b') ON CONFLICT (id) DO UPDATE SET s = excluded.s",
        "SELECT * FROM t AS OF VERSION 1",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r",
        "SELECT quantize(v, 'q8_0'), embed(s) FROM t",
    ]:
        put("sql_plan", s.encode())
        put("sql_parse", s.encode())

    for c in [
        command("CommandStatementQuery", field(1, "SELECT 1")),
        command("CommandStatementQuery", field(1, "SELECT * FROM t"), field(2, b"tx")),
        command("CommandGetTables", field(1, "marrow"), field(2, "pub%"), field(3, "t_"), field(4, "TABLE"), field(5, True)),
        command("CommandGetDbSchemas", field(2, "%")),
        command("CommandGetCatalogs"),
        command("CommandGetSqlInfo", field(1, 0), field(1, 1)),
        command("CommandGetPrimaryKeys", field(3, "t")),
        command("CommandPreparedStatementQuery", field(1, bytes(16))),
        command("CommandPreparedStatementUpdate", field(1, bytes(range(16)))),
        command("CommandStatementIngest", field(1, field(1, 1) + field(2, 2)), field(2, "t")),
        command("TicketStatementQuery", field(1, bytes(16))),
        command("ActionCreatePreparedStatementRequest", field(1, "SELECT $1")),
        command("ActionClosePreparedStatementRequest", field(1, bytes(16))),
    ]:
        put("flight_command", c)

    n = 5
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(n * 3, dtype=np.float32)), 3)
    for batch in [
        pa.record_batch({"id": pa.array(range(n), pa.int64()), "s": pa.array(list("abcde"))}),
        pa.record_batch({"v": vectors, "b": pa.array([b"x" * i for i in range(n)])}),
        pa.record_batch({"d": pa.array(["x", "y", "x", None, "y"]).dictionary_encode()}),
        pa.record_batch({"l": pa.array([[1, 2], [], None, [3], [4, 5, 6]]),
                         "st": pa.array([{"a": i, "b": str(i)} for i in range(n)])}),
        pa.record_batch({"ts": pa.array(range(n), pa.timestamp("us", tz="UTC")), "f": pa.array([0.5] * n, pa.float16())}),
    ]:
        put("flight_ipc", ipc_messages(batch))

    f32 = np.arange(6, dtype=np.float32).tobytes()
    put("safetensors_header", safetensors({"w": ("F32", [2, 3], f32)}))
    put("safetensors_header", safetensors({"a": ("F16", [4], bytes(8)), "b": ("BF16", [2, 2], bytes(8))}, {"format": "pt"}))
    put("safetensors_header", safetensors({"x": ("I8", [0], b""), "y": ("F64", [1], bytes(8))}))

    for cfg in [
        {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["query", "value"],
         "rank_pattern": {"value": 2}, "alpha_pattern": {"layer.1.attention.self.query": 16},
         "base_model_name_or_path": "m"},
        {"r": 16, "lora_alpha": 8, "use_rslora": True, "target_modules": "q"},
        {"r": 8, "target_modules": ".*\\.(q|v)_proj$", "lora_dropout": 0.1, "bias": "none"},
    ]:
        put("peft_config", json.dumps(cfg).encode())

    # Scheme index (see quant_blocks), then whole blocks of random bytes.
    for pick, block in enumerate([34, 18, 144, 84, 36, 4]):
        for blocks in (1, 3):
            put("quant_blocks", bytes([pick]) + bytes(rng.randrange(256) for _ in range(block * blocks)))


if __name__ == "__main__":
    main()
