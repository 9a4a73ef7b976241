"""Model weights as rows: all-MiniLM-L6-v2's safetensors through the CLI and through SQL (CALL, read_safetensors),
back out byte for byte, the 47 MB embedding matrix through ADBC, and corrupt files that import nothing."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import adbc_driver_manager
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

import marrow


EMBEDDINGS = "embeddings.word_embeddings.weight"


def _same_file(a: Path, b: Path) -> None:
    ta, tb = load_file(str(a)), load_file(str(b))
    assert sorted(ta) == sorted(tb)
    for k in ta:
        assert ta[k].dtype == tb[k].dtype and ta[k].shape == tb[k].shape, k
        assert ta[k].tobytes() == tb[k].tobytes(), k
    with safe_open(str(a), "np") as fa, safe_open(str(b), "np") as fb:
        assert fa.metadata() == fb.metadata()


def test_cli_import_and_export_round_trip(tmp_path: Path, marrow_bin: str, model_dir: Path) -> None:
    src = model_dir / "model.safetensors"
    data = tmp_path / "data"
    out = subprocess.run(
        [marrow_bin, "import-weights", str(src), "--model", "minilm", "--data-dir", str(data)],
        check=True, capture_output=True, text=True,
    ).stdout
    assert "imported model minilm:" in out and "tensors" in out
    dst = tmp_path / "out" / "minilm.safetensors"
    out = subprocess.run(
        [marrow_bin, "export-weights", "minilm", "--out", str(dst), "--data-dir", str(data)],
        check=True, capture_output=True, text=True,
    ).stdout
    assert "exported model minilm" in out
    _same_file(src, dst)
    # A second import under the same name is refused and changes nothing.
    again = subprocess.run(
        [marrow_bin, "import-weights", str(src), "--model", "minilm", "--data-dir", str(data)],
        capture_output=True, text=True,
    )
    assert again.returncode != 0 and "already exists" in again.stderr


def test_sql_import_export_and_large_tensor_through_adbc(model_server) -> None:
    server, imports, exports = model_server
    src = imports / "minilm.safetensors"
    tensors = load_file(str(src))
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        cur.execute("SELECT name, dtype, max(n_chunks) FROM read_safetensors('minilm.safetensors') GROUP BY name, dtype")
        listing = {r[0]: (r[1], r[2]) for r in cur.fetchall()}
        assert set(listing) == set(tensors)
        assert listing[EMBEDDINGS] == ("F32", 12)  # 30522 x 384 x 4 bytes = 47 MB in 4 MiB chunks

        cur.execute("CALL import_safetensors('minilm.safetensors', 'minilm')")
        row = cur.fetch_arrow_table().to_pylist()[0]
        assert row["tensors"] == len(tensors)
        assert row["bytes"] == sum(t.nbytes for t in tensors.values())

        # The 47 MB matrix, chunk by chunk through ADBC, equals numpy's bytes.
        cur.execute(f"SELECT data FROM tensors WHERE model = 'minilm' AND name = '{EMBEDDINGS}' ORDER BY chunk")
        blob = b"".join(cur.fetch_arrow_table().column(0).to_pylist())
        assert blob == tensors[EMBEDDINGS].tobytes()
        cur.execute(f"SELECT shape FROM tensors WHERE model = 'minilm' AND name = '{EMBEDDINGS}' AND chunk = 0")
        assert cur.fetchone()[0] == [30522, 384]

        cur.execute("SELECT model, format, tensors FROM models")
        assert cur.fetchall() == [("minilm", "safetensors", len(tensors))]

        cur.execute("CALL export_safetensors('minilm', 'back/minilm.safetensors')")
        assert cur.fetch_arrow_table().to_pylist()[0]["bytes"] == row["bytes"]
    _same_file(src, exports / "back" / "minilm.safetensors")


def _write_corrupt(path: Path, kind: str) -> None:
    good = {"a": np.arange(8, dtype=np.float32), "b": np.ones((2, 2), dtype=np.float16)}
    save_file(good, str(path))
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    body = raw[8 + n:]
    if kind == "truncated":
        path.write_bytes(raw[:8] + raw[8:20])
        return
    if kind == "header_past_end":
        path.write_bytes(struct.pack("<Q", 10_000) + raw[8:])
        return
    if kind == "overlap":
        header["b"]["data_offsets"] = [0, 8]
    elif kind == "out_of_range":
        header["a"]["data_offsets"] = [header["a"]["data_offsets"][0], len(body) + 64]
    elif kind == "unknown_dtype":
        header["a"]["dtype"] = "F12"
    elif kind == "shape_mismatch":
        header["a"]["shape"] = [9]
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + body)


@pytest.mark.parametrize(
    "kind,needle",
    [
        ("truncated", "runs past the end"),
        ("header_past_end", "runs past the end"),
        ("overlap", "overlap"),
        ("out_of_range", "outside the"),
        ("unknown_dtype", "unknown dtype F12"),
        ("shape_mismatch", "needs 36 bytes"),
    ],
)
def test_corrupt_safetensors_import_nothing(model_server, kind: str, needle: str) -> None:
    server, imports, _ = model_server
    _write_corrupt(imports / f"{kind}.safetensors", kind)
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.ProgrammingError) as err:
            cur.execute(f"CALL import_safetensors('{kind}.safetensors', 'bad')")
            cur.fetchall()
        assert needle in str(err.value), str(err.value)
        assert "INVALID_ARGUMENT" in str(err.value) or "InvalidArgument" in str(err.value)
        # The file is checked before anything is created or written.
        cur.execute("SHOW TABLES")
        assert not {"tensors", "models"} & {r[2] for r in cur.fetchall()}
    assert server.alive()


@pytest.mark.parametrize("scheme", ["q8_0", "q4_0"])
def test_quantized_model_exports_to_gguf(model_server, scheme: str) -> None:
    gguf = pytest.importorskip("gguf")
    server, imports, exports = model_server
    tensors = load_file(str(imports / "minilm.safetensors"))
    qtype = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}[scheme]
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        cur.execute("CALL import_safetensors('minilm.safetensors', 'minilm')")
        cur.fetchall()
        cur.execute(f"CALL quantize_model('minilm', 'minilm_{scheme}', '{scheme}')")
        row = cur.fetch_arrow_table().to_pylist()[0]
        # Every F32 tensor of MiniLM has rows of 384 or 1536 values and is quantized; position_ids (I64) is copied.
        floats = sum(1 for t in tensors.values() if t.dtype == np.float32)
        assert floats == len(tensors) - 1
        assert row == {"model": f"minilm_{scheme}", "tensors_quantized": floats, "tensors_copied": 1}
        cur.execute(f"CALL export_gguf('minilm_{scheme}', 'minilm_{scheme}.gguf')")
        cur.fetchall()
        with pytest.raises(adbc_driver_manager.Error) as err:
            cur.execute(f"CALL export_safetensors('minilm_{scheme}', 'nope.safetensors')")
            cur.fetchall()
        assert "quantized" in str(err.value)
    reader = gguf.GGUFReader(str(exports / f"minilm_{scheme}.gguf"))
    got = {t.name: t for t in reader.tensors}
    assert set(got) == set(tensors)
    ids = got["embeddings.position_ids"]
    assert ids.tensor_type == gguf.GGMLQuantizationType.I64
    np.testing.assert_array_equal(np.asarray(ids.data).reshape(1, 512), tensors["embeddings.position_ids"])
    for name in [EMBEDDINGS, "encoder.layer.0.attention.self.query.weight", "pooler.dense.bias"]:
        t = got[name]
        assert t.tensor_type == qtype
        ref = gguf.quants.quantize(tensors[name], qtype)
        # Block bytes identical to llama.cpp's reference quantizer, and the values it dequantizes to.
        assert np.asarray(t.data).tobytes() == ref.tobytes(), name
        deq = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
        np.testing.assert_array_equal(deq.reshape(tensors[name].shape), gguf.quants.dequantize(ref, qtype))
