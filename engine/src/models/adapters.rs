//! LoRA adapters as rows: PEFT directories in and out of the `adapters` table, and merging an adapter into its base.
//!
//! An adapter is one row of `adapters` (its PEFT config, rank, alpha, target modules, a task description whose
//! embedding Marrow computes on write, metrics JSON) plus its tensors in `tensors` (owner = the adapter's id), with a
//! `models` row of format `peft-lora` so ids are unique across models and adapters. A PEFT directory is
//! `adapter_config.json` + `adapter_model.safetensors` whose keys are
//! `base_model.model.<module>.lora_A.weight` ([r, in]) and `….lora_B.weight` ([out, r]).
//!
//! Merging computes `W + s·B·A` for every adapted module, with `s = alpha / r` (`alpha / √r` with rsLoRA; per-module
//! `rank_pattern` / `alpha_pattern` as PEFT applies them), in f32, stored back in the base tensor's dtype.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use arrow::array::{Array, BinaryArray, StringArray};
use arrow::datatypes::DataType;
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};
use crate::models::peft::{
    bad_config, check_tensors, read_dir, LoraConfig, CONFIG_FILE, FORMAT, WEIGHTS_FILE,
};
use crate::models::safetensors::TensorInfo;
use crate::models::weights;
use crate::session::Session;
use crate::sql::literal;
use marrow_udfs::tensor::{add_lora, from_f32, to_f32};

/// What an adapter import wrote.
#[derive(Debug, Clone)]
pub struct AdapterImport {
    pub base_model: String,
    pub modules: usize,
    pub stats: weights::ImportStats,
}

/// Import a PEFT LoRA directory as adapter `id`: its tensors (one commit), its `models` row, then its `adapters`
/// row; a failure after the first commit takes the earlier ones back out. `base_model` names the Marrow model it
/// adapts (default: the config's `base_model_name_or_path`).
pub async fn import(
    session: &Session,
    dir: &Path,
    id: &str,
    description: Option<&str>,
    base_model: Option<&str>,
    metrics: Option<&str>,
) -> Result<AdapterImport> {
    if id.is_empty() {
        return Err(Error::invalid("the adapter needs an id"));
    }
    let root = session.database().config().import_root.clone();
    let (config, tensors) = read_dir(root.as_deref(), dir)?;
    let base = base_model
        .map(str::to_string)
        .or(config.base_model.clone())
        .filter(|b| !b.is_empty())
        .ok_or_else(|| {
            bad_config("base_model_name_or_path is missing: name the base model in the import")
        })?;
    let metrics = metrics.unwrap_or("{}");
    match serde_json::from_str::<Value>(metrics) {
        Ok(Value::Object(_)) => {}
        _ => {
            return Err(Error::invalid(format!(
                "metrics must be a JSON object, got {metrics}"
            )))
        }
    }
    let description = description.map(str::to_string).unwrap_or_else(|| {
        format!(
            "LoRA rank {} on {} of {base}",
            config.rank,
            config.target_modules().join(", ")
        )
    });
    let stats = weights::import_as(session, &dir.join(WEIGHTS_FILE), id, FORMAT, None).await?;
    let targets: Vec<String> = config.target_modules().iter().map(|t| literal(t)).collect();
    let insert = format!(
        "INSERT INTO adapters (id, kind, base_model, rank, alpha, use_rslora, target_modules, description, \
         metrics, config) VALUES ({}, 'lora', {}, {}, {}, {}, make_array({}), {}, {}, {})",
        literal(id),
        literal(&base),
        config.rank,
        config.alpha,
        config.use_rslora,
        targets.join(", "),
        literal(&description),
        literal(metrics),
        literal(&config.text),
    );
    if let Err(e) = session.execute(&insert).await {
        let _ = weights::drop_model(session, id).await;
        return Err(e);
    }
    Ok(AdapterImport {
        base_model: base,
        modules: tensors.pairs.len(),
        stats,
    })
}

/// The adapter's row: (base model, config).
async fn adapter_row(session: &Session, id: &str) -> Result<(String, LoraConfig)> {
    let (_, batches) = session
        .execute(&format!(
            "SELECT base_model, config FROM adapters WHERE id = {}",
            literal(id)
        ))
        .await?
        .collect()
        .await?;
    let row = batches.iter().find(|b| b.num_rows() > 0).ok_or_else(|| {
        Error::not_found(format!(
            "adapter '{id}' not found; SELECT id FROM adapters lists them"
        ))
    })?;
    let strings = |i: usize| -> Result<String> {
        let c = arrow::compute::cast(row.column(i), &DataType::Utf8)?;
        c.as_any()
            .downcast_ref::<StringArray>()
            .map(|a| a.value(0).to_string())
            .ok_or_else(|| Error::internal("adapters has unexpected column types"))
    };
    Ok((strings(0)?, LoraConfig::parse(&strings(1)?)?))
}

/// Fail with NOT_FOUND unless adapter `id` exists.
pub async fn require(session: &Session, id: &str) -> Result<()> {
    adapter_row(session, id).await.map(|_| ())
}

/// Write adapter `id` back as a PEFT directory: `adapter_config.json` as imported, and `adapter_model.safetensors`
/// with the same tensors, bytes and metadata. Returns the bytes of tensor data written.
pub async fn export(session: &Session, id: &str, dir: &Path) -> Result<u64> {
    let (_, config) = adapter_row(session, id).await?;
    if dir.is_file() {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("{} is a file; a PEFT adapter is a directory", dir.display()),
        ));
    }
    std::fs::create_dir_all(dir)?;
    let bytes = weights::export(session, id, &dir.join(WEIGHTS_FILE), None).await?;
    let temp = dir.join(format!(".{CONFIG_FILE}.marrow-tmp-{}", std::process::id()));
    std::fs::write(&temp, config.text.as_bytes())?;
    std::fs::rename(&temp, dir.join(CONFIG_FILE))?;
    Ok(bytes)
}

/// A tensor's bytes, all chunks in order.
async fn tensor_bytes(session: &Session, model: &str, name: &str) -> Result<Vec<u8>> {
    let (_, batches) = session
        .execute(&format!(
            "SELECT data FROM tensors WHERE model = {} AND name = {} ORDER BY chunk",
            literal(model),
            literal(name)
        ))
        .await?
        .collect()
        .await?;
    let mut out = vec![];
    for b in &batches {
        let data = arrow::compute::cast(b.column(0), &DataType::Binary)?;
        let data = data
            .as_any()
            .downcast_ref::<BinaryArray>()
            .ok_or_else(|| Error::internal("data is not binary"))?;
        for v in data.iter().flatten() {
            out.extend_from_slice(v);
        }
    }
    Ok(out)
}

fn floats(dtype: &str, bytes: &[u8]) -> Result<Vec<f32>> {
    to_f32(dtype, bytes).ok_or_else(|| {
        Error::unsupported(format!(
            "merging into a {dtype} tensor; LoRA merges into F32, F16 or BF16 weights"
        ))
    })
}

/// The base model's tensor a module's weight is: `<module>.weight`, else the one tensor whose name ends with it (or
/// that it ends with), since PEFT paths and checkpoint names can differ by a wrapper prefix such as `bert.`.
fn resolve<'a>(names: &'a BTreeSet<String>, wanted: &str) -> Option<&'a String> {
    if let Some(n) = names.get(wanted) {
        return Some(n);
    }
    let mut hits = names
        .iter()
        .filter(|n| n.ends_with(&format!(".{wanted}")) || wanted.ends_with(&format!(".{n}")));
    let first = hits.next()?;
    hits.next().is_none().then_some(first)
}

/// Merge adapter `id` into its base model as a new model `target`: every adapted weight becomes `W + s·B·A`,
/// `modules_to_save` tensors replace the base's, everything else is copied. `base` (default: the adapter's base
/// model) must be the model the adapter was imported for, and every shape must fit. Returns the tensors merged.
pub async fn merge(session: &Session, id: &str, target: &str, base: Option<&str>) -> Result<usize> {
    let (own_base, config) = adapter_row(session, id).await?;
    let base = base.unwrap_or(&own_base).to_string();
    if base != own_base {
        return Err(Error::invalid(format!(
            "adapter '{id}' was trained for base model '{own_base}', not '{base}' \
             (re-import it naming '{base}' as its base model if they are the same weights)"
        )));
    }
    let listing = weights::tensor_listing(session, &base).await.map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            Error::not_found(format!(
                "adapter '{id}' adapts model '{base}', which is not in Marrow: import it first \
                 (marrow import-weights … --model {base})"
            ))
        } else {
            e
        }
    })?;
    if target.is_empty() || weights::model_exists(session, target).await? {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("model '{target}' already exists (or has no name)"),
        ));
    }
    let names: BTreeSet<String> = listing.iter().map(|t| t.name.clone()).collect();
    let by_name: BTreeMap<&str, &weights::TensorMeta> =
        listing.iter().map(|t| (t.name.as_str(), t)).collect();
    // Header of the adapter's own tensors, as stored.
    let own = weights::tensor_listing(session, id).await?;
    let infos: Vec<TensorInfo> = own
        .iter()
        .map(|t| TensorInfo {
            name: t.name.clone(),
            dtype: t.dtype.clone(),
            shape: t.shape.clone(),
            begin: 0,
            end: t.bytes,
        })
        .collect();
    let tensors = check_tensors(&config, &infos)?;
    // Check every shape before any work or write.
    let mut plan = vec![];
    for pair in &tensors.pairs {
        let wanted = format!("{}.weight", pair.module);
        let name = resolve(&names, &wanted).ok_or_else(|| {
            Error::invalid(format!(
                "adapter '{id}' adapts {wanted}, which model '{base}' does not have: wrong base model?"
            ))
        })?;
        let w = by_name[name.as_str()];
        let (out, inp) = (pair.b.shape[0], pair.a.shape[1]);
        let expect = if config.fan_in_fan_out {
            vec![inp, out]
        } else {
            vec![out, inp]
        };
        if w.shape != expect {
            return Err(Error::invalid(format!(
                "adapter '{id}' needs {name} of shape {expect:?} (lora_B {:?} · lora_A {:?}), but model \
                 '{base}' has {:?}: wrong base model?",
                pair.b.shape, pair.a.shape, w.shape
            )));
        }
        if let Some(q) = &w.quantization {
            return Err(Error::unsupported(format!(
                "{name} in model '{base}' is quantized ({q}); merge into the unquantized model, then quantize"
            )));
        }
        plan.push((pair, name.clone()));
    }
    let mut replacements = vec![];
    for (t, wanted) in &tensors.replaced {
        let name = resolve(&names, wanted).ok_or_else(|| {
            Error::invalid(format!(
                "adapter '{id}' replaces {wanted}, which model '{base}' does not have"
            ))
        })?;
        let w = by_name[name.as_str()];
        if w.shape != t.shape || w.dtype != t.dtype {
            return Err(Error::invalid(format!(
                "adapter '{id}' replaces {name} with a {} {:?} tensor, but model '{base}' has {} {:?}",
                t.dtype, t.shape, w.dtype, w.shape
            )));
        }
        replacements.push((t.name.clone(), name.clone()));
    }
    let mut seen = BTreeSet::new();
    for (_, name) in plan.iter().map(|(p, n)| (p, n)) {
        if !seen.insert(name.clone()) {
            return Err(Error::invalid(format!(
                "adapter '{id}' adapts {name} more than once"
            )));
        }
    }
    let mut rows = weights::ChunkRows::new(target);
    for (pair, name) in &plan {
        let w_meta = by_name[name.as_str()];
        let mut w = floats(&w_meta.dtype, &tensor_bytes(session, &base, name).await?)?;
        let a = floats(
            &pair.a.dtype,
            &tensor_bytes(session, id, &pair.a.name).await?,
        )?;
        let b = floats(
            &pair.b.dtype,
            &tensor_bytes(session, id, &pair.b.name).await?,
        )?;
        let (out, rank, inp) = (
            pair.b.shape[0] as usize,
            pair.a.shape[0] as usize,
            pair.a.shape[1] as usize,
        );
        if w.len() != out * inp || a.len() != rank * inp || b.len() != out * rank {
            return Err(Error::invalid(format!(
                "stored tensors of {name} or adapter '{id}' do not hold the bytes their shapes need"
            )));
        }
        add_lora(
            &mut w,
            &a,
            &b,
            out,
            rank,
            inp,
            config.scale(&pair.module) as f32,
            config.fan_in_fan_out,
        );
        rows.push_tensor(w_meta, &from_f32(&w_meta.dtype, &w))?;
    }
    for (own_name, name) in &replacements {
        let bytes = tensor_bytes(session, id, own_name).await?;
        rows.push_tensor(by_name[name.as_str()], &bytes)?;
    }
    let changed: Vec<String> = plan
        .iter()
        .map(|(_, n)| n.clone())
        .chain(replacements.iter().map(|(_, n)| n.clone()))
        .collect();
    let merged = changed.len();
    let batches = rows.finish()?;
    weights::append_chunks(session, batches).await?;
    let t = literal(target);
    let b = literal(&base);
    let not_changed = changed
        .iter()
        .map(|n| literal(n))
        .collect::<Vec<_>>()
        .join(", ");
    let steps = [
        format!(
            "INSERT INTO tensors SELECT {t}, name, dtype, shape, quantization, chunk, n_chunks, data \
             FROM tensors WHERE model = {b} AND name NOT IN ({not_changed})"
        ),
        format!(
            "INSERT INTO models SELECT {t}, {}, metadata, tensors, bytes, now() FROM models WHERE model = {b}",
            literal(&format!("merged:{id}"))
        ),
    ];
    for sql in steps {
        if let Err(e) = session.execute(&sql).await {
            let _ = session
                .execute(&format!("DELETE FROM tensors WHERE model = {t}"))
                .await;
            return Err(e);
        }
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_names_resolve_across_wrapper_prefixes() {
        let names: BTreeSet<String> = ["bert.encoder.q.weight", "encoder.k.weight"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(
            resolve(&names, "encoder.q.weight").unwrap(),
            "bert.encoder.q.weight"
        );
        assert_eq!(
            resolve(&names, "model.encoder.k.weight").unwrap(),
            "encoder.k.weight"
        );
        assert!(resolve(&names, "encoder.v.weight").is_none());
    }
}
