"""LoRA adapters as rows: PEFT directories for all-MiniLM-L6-v2's attention query/value projections, made with numpy +
safetensors in PEFT's layout, imported, exported back, merged into the base model (checked against numpy), found by
task description, and refused when the config, the tensors or the base model do not fit."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Optional

import adbc_driver_manager
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

import marrow


PREFIX = "base_model.model."
HIDDEN = 384


def make_peft(
    path: Path,
    *,
    rank: int = 8,
    alpha: float = 16,
    targets: tuple[str, ...] = ("query", "value"),
    layers: tuple[int, ...] = (0, 1, 2, 3, 4, 5),
    seed: int = 0,
    config: Optional[dict[str, Any]] = None,
    rank_of: Optional[dict[str, int]] = None,
    dtype: Any = np.float32,
) -> dict[str, np.ndarray]:
    """A PEFT LoRA directory as `peft` saves one: adapter_config.json + adapter_model.safetensors."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in layers:
        for t in targets:
            r = (rank_of or {}).get(t, rank)
            module = f"{PREFIX}encoder.layer.{layer}.attention.self.{t}"
            tensors[f"{module}.lora_A.weight"] = (rng.standard_normal((r, HIDDEN)) * 0.02).astype(dtype)
            tensors[f"{module}.lora_B.weight"] = (rng.standard_normal((HIDDEN, r)) * 0.02).astype(dtype)
    cfg = {
        "peft_type": "LORA",
        "task_type": "FEATURE_EXTRACTION",
        "base_model_name_or_path": "sentence-transformers/all-MiniLM-L6-v2",
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": 0.05,
        "target_modules": list(targets),
        "use_rslora": False,
        "fan_in_fan_out": False,
        "bias": "none",
    }
    cfg.update(config or {})
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    save_file(tensors, str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
    return tensors


def _one(cur: Any, sql: str, params: Optional[list[Any]] = None) -> Any:
    cur.execute(sql, parameters=params)
    return cur.fetchone()


def test_import_export_round_trip_and_row(model_server) -> None:
    server, imports, exports = model_server
    tensors = make_peft(imports / "lora_sent", rank=8, alpha=16)
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        row = _one(cur, "CALL import_peft('lora_sent', 'sentiment', 'classify the sentiment of product reviews', "
                        "'minilm', '{\"accuracy\": 0.91}')")
        assert row == ("sentiment", "minilm", 12, 24, sum(t.nbytes for t in tensors.values()))
        cur.execute("SELECT id, kind, base_model, rank, alpha, use_rslora, target_modules, metrics, "
                    "description_embedding IS NOT NULL, created_at IS NOT NULL FROM adapters")
        rows = cur.fetchall()
        assert rows == [("sentiment", "lora", "minilm", 8, 16.0, False, ["query", "value"], '{"accuracy": 0.91}',
                         True, True)]
        assert _one(cur, "SELECT count(*) FROM tensors WHERE model = 'sentiment'") == (24,)
        assert _one(cur, "CALL export_peft('sentiment', 'out/sentiment')")[1] == sum(t.nbytes for t in tensors.values())
    out = exports / "out" / "sentiment"
    assert (out / "adapter_config.json").read_text() == (imports / "lora_sent" / "adapter_config.json").read_text()
    back = load_file(str(out / "adapter_model.safetensors"))
    assert sorted(back) == sorted(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape and back[k].tobytes() == v.tobytes(), k
    with safe_open(str(out / "adapter_model.safetensors"), "np") as f:
        assert f.metadata() == {"format": "pt"}


@pytest.mark.parametrize(
    "variant, config, rank_of",
    [
        ("plain", {}, None),
        ("rslora", {"use_rslora": True}, None),
        ("patterns", {"rank_pattern": {"value": 4}, "alpha_pattern": {"layer.0.attention.self.query": 64}},
         {"value": 4}),
    ],
)
def test_merge_equals_numpy(model_server, variant: str, config: dict[str, Any],
                            rank_of: Optional[dict[str, int]]) -> None:
    server, imports, exports = model_server
    rank, alpha = 8, 16.0
    adapter = make_peft(imports / "lora", rank=rank, alpha=alpha, config=config, rank_of=rank_of, seed=3)
    base = load_file(str(imports / "minilm.safetensors"))
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        cur.execute("CALL import_safetensors('minilm.safetensors', 'minilm')")
        cur.fetchall()
        cur.execute("CALL import_peft('lora', 'a1', NULL, 'minilm')")
        cur.fetchall()
        assert _one(cur, "CALL merge_adapter('a1', 'minilm_a1')") == ("minilm_a1", 12)
        cur.execute("CALL export_safetensors('minilm_a1', 'merged.safetensors')")
        cur.fetchall()
        assert _one(cur, "SELECT format FROM models WHERE model = 'minilm_a1'") == ("merged:a1",)
    merged = load_file(str(exports / "merged.safetensors"))
    assert sorted(merged) == sorted(base)
    adapted = 0
    for name, w in base.items():
        module = name.removesuffix(".weight")
        a = adapter.get(f"{PREFIX}{module}.lora_A.weight")
        if a is None:
            assert merged[name].tobytes() == w.tobytes(), name
            continue
        b = adapter[f"{PREFIX}{module}.lora_B.weight"]
        r = a.shape[0]
        a_ = alpha
        if variant == "patterns" and module.endswith("layer.0.attention.self.query"):
            a_ = 64.0
        scale = a_ / np.sqrt(r) if variant == "rslora" else a_ / r
        want = w + np.float32(scale) * (b @ a)
        np.testing.assert_allclose(merged[name], want, rtol=1e-5, atol=1e-6, err_msg=name)
        assert not np.array_equal(merged[name], w)
        adapted += 1
    assert adapted == 12


def test_find_adapters_by_task(model_server) -> None:
    server, imports, _ = model_server
    tasks = {
        "sentiment": "classify the sentiment of customer product reviews as positive or negative",
        "sql": "translate natural language questions into SQL queries over a database",
        "medical": "answer questions about symptoms, diseases and medication dosage",
    }
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        for i, (name, text) in enumerate(tasks.items()):
            make_peft(imports / name, seed=i, layers=(0,))
            cur.execute(f"CALL import_peft('{name}', '{name}', '{text}', 'minilm')")
            cur.fetchall()
        for query, want in [
            ("is this review happy or angry?", "sentiment"),
            ("write a SELECT statement for me", "sql"),
            ("how much ibuprofen can I take for a headache", "medical"),
        ]:
            cur.execute("SELECT id FROM adapters ORDER BY cosine_distance(description_embedding, embed($1)) LIMIT 1",
                        parameters=[query])
            assert cur.fetchall() == [(want,)], query
        cur.execute("CALL drop_adapter('sql')")
        cur.fetchall()
        assert _one(cur, "SELECT count(*) FROM adapters") == (2,)
        assert _one(cur, "SELECT count(*) FROM tensors WHERE model = 'sql'") == (0,)


def _rewrite_config(d: Path, **changes: Any) -> None:
    cfg = json.loads((d / "adapter_config.json").read_text())
    cfg.update(changes)
    (d / "adapter_config.json").write_text(json.dumps(cfg))


def _bad_import(kind: str, d: Path) -> str:
    """Break a good adapter directory in one way; return what the error must say."""
    if kind == "rank":
        _rewrite_config(d, r=4)
        return "rank 4"
    if kind == "targets":
        _rewrite_config(d, target_modules=["query"])
        return "not in target_modules"
    if kind == "half":
        t = load_file(str(d / "adapter_model.safetensors"))
        t.pop(f"{PREFIX}encoder.layer.0.attention.self.value.lora_B.weight")
        save_file(t, str(d / "adapter_model.safetensors"))
        return "only one of lora_A and lora_B"
    if kind == "truncated":
        data = (d / "adapter_model.safetensors").read_bytes()
        (d / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
        return "not a valid safetensors file"
    if kind == "pickle":
        (d / "adapter_model.safetensors").rename(d / "adapter_model.bin")
        return "safe_serialization"
    if kind == "not_lora":
        _rewrite_config(d, peft_type="PREFIX_TUNING")
        return "LoRA adapters only"
    if kind == "config_json":
        (d / "adapter_config.json").write_text("{ not json")
        return "not JSON"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["rank", "targets", "half", "truncated", "pickle", "not_lora", "config_json"])
def test_bad_adapters_import_nothing(model_server, kind: str) -> None:
    server, imports, _ = model_server
    make_peft(imports / "bad", layers=(0,))
    needle = _bad_import(kind, imports / "bad")
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as err:
            cur.execute("CALL import_peft('bad', 'bad', 'x', 'minilm')")
            cur.fetchall()
        assert needle in str(err.value), str(err.value)
        assert _one(cur, "SELECT count(*) FROM adapters") == (0,)
        cur.execute("SHOW TABLES")
        if "tensors" in {r[2] for r in cur.fetchall()}:
            assert _one(cur, "SELECT count(*) FROM tensors WHERE model = 'bad'") == (0,)


def test_merge_refuses_the_wrong_base_model(model_server) -> None:
    server, imports, _ = model_server
    # A model whose query/value weights have other shapes (a 256-wide encoder).
    other = {f"encoder.layer.{i}.attention.self.{t}.weight": np.ones((256, 256), np.float32)
             for i in range(6) for t in ("query", "value")}
    save_file(other, str(imports / "other.safetensors"))
    make_peft(imports / "lora", layers=(0, 1))
    with marrow.connect(server.uri) as conn, conn.cursor() as cur:
        for sql in ["CALL import_safetensors('minilm.safetensors', 'minilm')",
                    "CALL import_safetensors('other.safetensors', 'other')",
                    "CALL import_peft('lora', 'for_minilm', 'x', 'minilm')",
                    "CALL import_peft('lora', 'for_other', 'x', 'other')"]:
            cur.execute(sql)
            cur.fetchall()
        models_before = _one(cur, "SELECT count(*) FROM models")
        tensors_before = _one(cur, "SELECT count(*) FROM tensors")
        for sql, needle in [
            ("CALL merge_adapter('for_minilm', 'm2', 'other')", "was trained for base model 'minilm', not 'other'"),
            ("CALL merge_adapter('for_other', 'm2')", "wrong base model"),
            ("CALL merge_adapter('nope', 'm2')", "adapter 'nope' not found"),
            ("CALL merge_adapter('for_minilm', 'other')", "already exists"),
        ]:
            with pytest.raises(adbc_driver_manager.Error) as err:
                cur.execute(sql)
                cur.fetchall()
            assert needle in str(err.value), (sql, str(err.value))
        assert _one(cur, "SELECT count(*) FROM models") == models_before
        assert _one(cur, "SELECT count(*) FROM tensors") == tensors_before
        # The same adapter merges into the base it was made for.
        assert _one(cur, "CALL merge_adapter('for_minilm', 'm2')") == ("m2", 4)
    assert server.alive()


def test_cli_import_and_export_adapter(tmp_path: Path, marrow_bin: str) -> None:
    tensors = make_peft(tmp_path / "lora", layers=(0, 1), dtype=np.float16)
    data = tmp_path / "data"
    out = subprocess.run(
        [marrow_bin, "import-adapter", str(tmp_path / "lora"), "--id", "half", "--base-model", "minilm",
         "--description", "a float16 adapter", "--data-dir", str(data)],
        check=True, capture_output=True, text=True,
    ).stdout
    assert "imported adapter half for minilm: 4 modules, 8 tensors" in out
    subprocess.run(
        [marrow_bin, "export-adapter", "half", "--out", str(tmp_path / "back"), "--data-dir", str(data)],
        check=True, capture_output=True, text=True,
    )
    back = load_file(str(tmp_path / "back" / "adapter_model.safetensors"))
    assert {k: (v.dtype, v.tobytes()) for k, v in back.items()} == {
        k: (v.dtype, v.tobytes()) for k, v in tensors.items()}
    again = subprocess.run(
        [marrow_bin, "import-adapter", str(tmp_path / "lora"), "--id", "half", "--data-dir", str(data)],
        capture_output=True, text=True,
    )
    assert again.returncode != 0 and "already exists" in again.stderr
