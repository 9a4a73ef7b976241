"""quantize()/dequantize() over Flight SQL, checked bit for bit against gguf-py 0.19 (`gguf.quants`, llama.cpp's
reference in numpy) on all-MiniLM-L6-v2's real tensors and on edge-case blocks, and against numpy references of the
documented nf4 and int8 layouts."""

from __future__ import annotations

from pathlib import Path

import adbc_driver_manager
import numpy as np
import pyarrow as pa
import pytest

import marrow

gguf_quants = pytest.importorskip("gguf.quants")
from gguf import GGMLQuantizationType as T  # noqa: E402

GGML = {"q8_0": T.Q8_0, "q4_0": T.Q4_0, "q4_k": T.Q4_K, "q2_k": T.Q2_K}
BLOCK = {"q8_0": (32, 34), "q4_0": (32, 18), "q4_k": (256, 144), "q2_k": (256, 84), "nf4": (64, 36)}


def _minilm_rows(model_dir: Path) -> dict[str, np.ndarray]:
    """Every float tensor of the model as rows of its last dimension (how GGUF lays tensors out)."""
    from safetensors.numpy import load_file

    tensors = load_file(str(model_dir / "model.safetensors"))
    return {
        name: t.reshape(-1, t.shape[-1]).astype(np.float32)
        for name, t in sorted(tensors.items())
        if t.dtype == np.float32
    }


def _ingest_rows(cur, table: str, groups: dict[str, np.ndarray]) -> None:
    """One row per vector: (name, i, v List<Float32>), sent in batches of a few MiB."""
    batches = []
    for name, rows in groups.items():
        n, width = rows.shape
        values = pa.ListArray.from_arrays(
            pa.array(np.arange(n + 1, dtype=np.int32) * width), pa.array(rows.ravel(), pa.float32())
        )
        t = pa.table({"name": pa.array([name] * n), "i": pa.array(np.arange(n), pa.int64()), "v": values})
        batches += t.to_batches(max_chunksize=max(1, (2 << 20) // (4 * width)))
    cur.adbc_ingest(table, pa.Table.from_batches(batches), mode="create")


def _fetch_by_name(cur, sql: str, params=None) -> dict[str, list]:
    cur.execute(sql, parameters=params)
    out: dict[str, list] = {}
    for batch in cur.fetch_record_batch():
        d = batch.to_pydict()
        for name, i, x in zip(d["name"], d["i"], d["x"]):
            out.setdefault(name, []).append((i, x))
    return {k: [x for _, x in sorted(v)] for k, v in out.items()}


def _block_mismatches(ours: bytes, ref: bytes, block_bytes: int) -> int:
    assert len(ours) == len(ref)
    a = np.frombuffer(ours, np.uint8).reshape(-1, block_bytes)
    b = np.frombuffer(ref, np.uint8).reshape(-1, block_bytes)
    return int(np.any(a != b, axis=1).sum())


def _same_floats(a: np.ndarray, b: np.ndarray) -> int:
    """Number of elements whose float32 bits differ (NaNs compare equal to NaNs)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    assert a.shape == b.shape
    both_nan = np.isnan(a) & np.isnan(b)
    return int(((a.view(np.uint32) != b.view(np.uint32)) & ~both_nan).sum())


@pytest.mark.parametrize("scheme", ["q8_0", "q4_0"])
def test_quantize_matches_gguf_on_minilm(server, scheme, model_dir):
    rows = _minilm_rows(model_dir)
    _, block_bytes = BLOCK[scheme]
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        _ingest_rows(cur, "w", rows)
        got = _fetch_by_name(cur, "SELECT name, i, quantize(v, $1) AS x FROM w", [scheme])
        deq = _fetch_by_name(cur, "SELECT name, i, dequantize(quantize(v, $1), $1) AS x FROM w", [scheme])
    assert sorted(got) == sorted(rows)
    blocks = mismatched = value_mismatches = 0
    for name, t in rows.items():
        ref = gguf_quants.quantize(t, GGML[scheme])
        ours = b"".join(got[name])
        blocks += len(ours) // block_bytes
        mismatched += _block_mismatches(ours, ref.tobytes(), block_bytes)
        ref_values = gguf_quants.dequantize(ref, GGML[scheme])
        value_mismatches += _same_floats(np.array(deq[name], np.float32), ref_values)
    assert blocks == sum(t.size for t in rows.values()) // BLOCK[scheme][0]
    # Every block of the 22.7M weights is byte-identical to llama.cpp's reference, and dequantizes identically.
    assert (mismatched, value_mismatches) == (0, 0), f"{mismatched} of {blocks} blocks differ"


def _edge_blocks() -> np.ndarray:
    rng = np.random.default_rng(42)
    blocks = [
        np.zeros(32),
        np.r_[-0.0, np.zeros(31)],  # numpy's argmax keeps index 0's sign: q4_0 d = +0.0
        np.full(32, -0.0),
        np.r_[rng.normal(0, 0.01, 31), 50.0],  # one outlier
        np.r_[50.0, rng.normal(0, 0.01, 31)],
        -np.abs(rng.normal(0, 1, 32)) - 0.01,  # all negative
        np.abs(rng.normal(0, 1, 32)) + 0.01,  # all positive
        rng.normal(0, 1e-30, 32),  # tiny: fp16 scale underflows
        rng.normal(0, 1e-38, 32),  # 1/d overflows (numpy gives quants 0 on x86-64)
        np.full(32, 1e-45),  # d underflows to exactly 0
        rng.normal(0, 1e-42, 32),
        np.r_[1e-39, np.zeros(31)],
        rng.normal(0, 1e5, 32),
        rng.normal(0, 1e7, 32),  # fp16 scale overflows to inf
        np.r_[3e38, -3e38, np.zeros(30)],
        np.r_[-2.0, 2.0, rng.uniform(-1, 1, 30)],  # ties in magnitude: the first wins (q4_0)
        np.r_[2.0, -2.0, rng.uniform(-1, 1, 30)],
        np.r_[127.0, (np.arange(31) - 15) + 0.5],  # d = 1: exact halves round away from zero
        np.r_[-8.0, np.arange(31) / 2 - 7.5],  # q4_0 d = 1: x + 8.5 lands on integers
        np.linspace(-1, 1, 32),
        np.full(32, 0.1),
        np.full(32, -7.0),
    ]
    blocks += list(rng.normal(0, 1, (64, 32)))
    blocks += list(rng.standard_cauchy((32, 32)))
    return np.array(blocks, np.float32)


def test_edge_case_blocks_match_gguf(server):
    blocks = _edge_blocks()
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        _ingest_rows(cur, "e", {"edge": blocks})
        for scheme in ("q8_0", "q4_0"):
            q = _fetch_by_name(cur, "SELECT name, i, quantize(v, $1) AS x FROM e", [scheme])["edge"]
            d = _fetch_by_name(cur, "SELECT name, i, dequantize(quantize(v, $1), $1) AS x FROM e", [scheme])["edge"]
            with np.errstate(all="ignore"):
                ref = gguf_quants.quantize(blocks, GGML[scheme])
                ref_values = gguf_quants.dequantize(ref, GGML[scheme])
            for k, block in enumerate(blocks):
                assert q[k] == ref[k].tobytes(), f"{scheme} block {k}: {block}"
            assert _same_floats(np.array(d, np.float32), ref_values) == 0, scheme


def _random_k_blocks(qtype: T, n: int, rng: np.random.Generator) -> np.ndarray:
    """Random but valid K-quant super-blocks: random scale and quant bytes, finite fp16 d and dmin."""
    _, type_size = BLOCK["q4_k" if qtype == T.Q4_K else "q2_k"]
    blocks = rng.integers(0, 256, (n, type_size), dtype=np.uint8)
    d = (rng.normal(0, 1, n) * 10.0 ** rng.integers(-6, 3, n)).astype(np.float16)
    dmin = (rng.normal(0, 1, n) * 10.0 ** rng.integers(-6, 3, n)).astype(np.float16)
    d[:4] = [0.0, -0.0, np.float16(6e-8), np.float16(65504.0)]  # zero, negative zero, subnormal, largest
    dmin[4:6] = [0.0, np.float16(-6e-5)]
    at = 0 if qtype == T.Q4_K else type_size - 4
    blocks[:, at : at + 2] = d.view(np.uint8).reshape(n, 2)
    blocks[:, at + 2 : at + 4] = dmin.view(np.uint8).reshape(n, 2)
    return blocks


@pytest.mark.parametrize("scheme", ["q4_k", "q2_k"])
def test_k_quant_dequantize_matches_gguf_on_random_blocks(server, scheme):
    rng = np.random.default_rng(7 if scheme == "q4_k" else 8)
    blocks = _random_k_blocks(GGML[scheme], 2000, rng)
    # One multi-block row too: rows are concatenations of super-blocks.
    blobs = [b.tobytes() for b in blocks] + [blocks[:16].tobytes()]
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        cur.adbc_ingest("kb", pa.table({"i": pa.array(range(len(blobs)), pa.int64()), "b": pa.array(blobs, pa.binary())}), mode="create")
        cur.execute("SELECT i, dequantize(b, $1) AS x FROM kb ORDER BY i", parameters=[scheme])
        got = cur.fetch_arrow_table().column("x").to_pylist()
    ref = gguf_quants.dequantize(blocks, GGML[scheme])
    assert _same_floats(np.array(got[:-1], np.float32), ref) == 0
    assert _same_floats(np.array(got[-1], np.float32), ref[:16].ravel()) == 0


@pytest.mark.parametrize("scheme", ["q4_k", "q2_k"])
def test_k_quant_quantize_round_trips_on_minilm(server, scheme, model_dir):
    """No gguf-py quantizer exists for K-quants: our blobs must decode identically in gguf-py, with small error."""
    rows = _minilm_rows(model_dir)
    rows = {k: v.reshape(-1, 256) for k, v in rows.items() if "encoder.layer.0." in k and v.size % 256 == 0}
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        _ingest_rows(cur, "w", rows)
        got = _fetch_by_name(cur, "SELECT name, i, quantize(v, $1) AS x FROM w", [scheme])
        deq = _fetch_by_name(cur, "SELECT name, i, dequantize(quantize(v, $1), $1) AS x FROM w", [scheme])
    for name, t in rows.items():
        blob = np.frombuffer(b"".join(got[name]), np.uint8).reshape(t.shape[0], -1)
        ref_values = gguf_quants.dequantize(blob, GGML[scheme])
        ours = np.array(deq[name], np.float32)
        assert _same_floats(ours, ref_values) == 0, name
        # RMSE relative to the tensor's RMS: llama.cpp reports about 0.07-0.1 for Q4_K and 0.25-0.35 for Q2_K.
        rel = np.sqrt(np.mean((ours - t) ** 2)) / np.sqrt(np.mean(t**2))
        assert rel < (0.12 if scheme == "q4_k" else 0.45), (name, rel)


NF4 = np.array(
    [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
     -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
     0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0],
    np.float32,
)


def _nf4_reference(x: np.ndarray) -> bytes:
    """The documented layout: per 64 values, f32 absmax then codes, value 2j in the high nibble of byte j."""
    blocks = x.reshape(-1, 64)
    absmax = np.abs(blocks).max(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        inv = np.where(absmax > 0, np.float32(1) / absmax, np.float32(0)).astype(np.float32)
    mid = ((NF4[1:].astype(np.float64) + NF4[:-1]) / 2).astype(np.float32)
    codes = (blocks * inv)[..., None] > mid  # the number of midpoints passed
    codes = codes.sum(axis=-1).astype(np.uint8)
    packed = (codes[:, 0::2] << 4) | codes[:, 1::2]
    return np.concatenate([absmax.astype("<f4").view(np.uint8), packed], axis=1).tobytes()


def _int8_reference(x: np.ndarray) -> bytes:
    scale = np.float32(np.abs(x).max() / np.float32(127)) if x.size else np.float32(0)
    with np.errstate(divide="ignore"):
        inv = np.float32(1) / scale if scale != 0 else np.float32(0)
    q = gguf_quants.np_roundf(x * inv).astype(np.int8)
    return np.array([scale], "<f4").tobytes() + q.tobytes()


def test_nf4_and_int8_match_numpy_references(server, model_dir):
    rows = _minilm_rows(model_dir)
    rows = {k: v for k, v in rows.items() if k.startswith("encoder.layer.1.") or "position" in k}
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        _ingest_rows(cur, "w", rows)
        for scheme, ref_fn in (("nf4", _nf4_reference), ("int8", _int8_reference)):
            got = _fetch_by_name(cur, "SELECT name, i, quantize(v, $1) AS x FROM w", [scheme])
            deq = _fetch_by_name(cur, "SELECT name, i, dequantize(quantize(v, $1), $1) AS x FROM w", [scheme])
            for name, t in rows.items():
                for k in range(t.shape[0]):
                    assert got[name][k] == ref_fn(t[k]), (scheme, name, k)
                ours = np.array(deq[name], np.float32)
                if scheme == "nf4":
                    blocks = t.reshape(-1, 64)
                    step = np.abs(blocks).max(axis=1, keepdims=True) * np.float32(0.3038072 / 2 * 1.0001)
                    assert np.all(np.abs(ours.reshape(-1, 64) - blocks) <= step), name
                else:
                    step = np.abs(t).max(axis=1, keepdims=True) / np.float32(254) * np.float32(1.0001)
                    assert np.all(np.abs(ours - t) <= step), name


def test_errors_over_flight(server):
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as e:
            cur.execute("SELECT quantize($1, 'q8_0')", parameters=[[0.5] * 33])
            cur.fetchall()  # errors surface when the stream is read
        assert "q8_0 quantizes blocks of 32 values; got 33 values" in str(e.value)
        with pytest.raises(adbc_driver_manager.Error) as e:
            cur.execute("SELECT dequantize($1, 'q4_k')", parameters=[b"\x00" * 145])
            cur.fetchall()  # errors surface when the stream is read
        assert "a q4_k blob is a whole number of 144-byte blocks (256 values each); got 145 bytes" in str(e.value)
        with pytest.raises(adbc_driver_manager.Error) as e:
            cur.execute("SELECT quantize([1.0], 'q3_k')")
            cur.fetchall()  # errors surface when the stream is read
        assert "unknown quantization scheme 'q3_k'; expected one of q8_0, q4_0, q4_k, q2_k, nf4, int8" in str(e.value)
        with pytest.raises(adbc_driver_manager.Error) as e:
            cur.execute("SELECT quantize($1, 'int8')", parameters=[[1.0, float("nan")]])
            cur.fetchall()  # errors surface when the stream is read
        assert "NaN or infinite" in str(e.value)
        # The server is still fine, and a good query works on the same connection.
        cur.execute("SELECT dequantize(quantize($1, 'int8'), 'int8') AS x", parameters=[[127.0, -1.0]])
        assert cur.fetchone()[0] == [127.0, -1.0]
