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
use std::sync::Arc;

use arrow::array::{Array, BinaryArray, StringArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use serde_json::Value;

use crate::catalog::{META_DEFAULTS, META_EMBED, META_PRIMARY_KEY};
use crate::dml::literal;
use crate::error::{Error, ErrorKind, Result};
use crate::session::Session;
use crate::weights::{self, TensorInfo};

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The `models.format` of an adapter's tensors.
pub const FORMAT: &str = "peft-lora";
const PEFT_PREFIX: &str = "base_model.model.";

/// The `adapters` table every data directory has (created with `memories`).
pub fn adapters_schema() -> Schema {
    let defaults: BTreeMap<&str, &str> = [
        ("kind", "'lora'"),
        ("metrics", "'{}'"),
        ("created_at", "now()"),
    ]
    .into_iter()
    .collect();
    let metadata = [
        (META_PRIMARY_KEY.to_string(), "id".to_string()),
        (
            META_DEFAULTS.to_string(),
            serde_json::to_string(&defaults).expect("defaults serialize"),
        ),
        (
            META_EMBED.to_string(),
            serde_json::to_string(&BTreeMap::from([("description_embedding", "description")]))
                .expect("embed setting serializes"),
        ),
    ]
    .into_iter()
    .collect();
    Schema::new_with_metadata(
        vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("base_model", DataType::Utf8, false),
            Field::new("rank", DataType::Int32, false),
            Field::new("alpha", DataType::Float64, false),
            Field::new("use_rslora", DataType::Boolean, false),
            Field::new(
                "target_modules",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                false,
            ),
            Field::new("description", DataType::Utf8, true),
            Field::new(
                "description_embedding",
                DataType::FixedSizeList(
                    Arc::new(Field::new("item", DataType::Float32, true)),
                    crate::database::MEMORY_EMBEDDING_DIM,
                ),
                true,
            ),
            Field::new("metrics", DataType::Utf8, false),
            Field::new("config", DataType::Utf8, false),
            Field::new(
                "created_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ],
        metadata,
    )
}

/// `target_modules` as PEFT matches it against a module's path.
#[derive(Debug, Clone)]
enum Targets {
    /// A module matches when its path is a listed name or ends with `.name`.
    Names(Vec<String>),
    /// A regular expression the whole path must match.
    Pattern(String, regex::Regex),
    /// PEFT's `all-linear`: every linear layer but the output head.
    AllLinear,
}

impl Targets {
    fn matches(&self, module: &str) -> bool {
        match self {
            Targets::Names(names) => names
                .iter()
                .any(|t| module == t || module.ends_with(&format!(".{t}"))),
            Targets::Pattern(_, re) => re.is_match(module),
            Targets::AllLinear => true,
        }
    }

    fn listed(&self) -> Vec<String> {
        match self {
            Targets::Names(n) => n.clone(),
            Targets::Pattern(p, _) => vec![p.clone()],
            Targets::AllLinear => vec!["all-linear".into()],
        }
    }
}

/// The parts of a PEFT LoRA config that decide what the tensors must be and how they merge.
#[derive(Debug, Clone)]
pub struct LoraConfig {
    pub text: String,
    pub rank: i64,
    pub alpha: f64,
    pub use_rslora: bool,
    pub fan_in_fan_out: bool,
    pub base_model: Option<String>,
    targets: Targets,
    rank_pattern: Vec<(regex::Regex, i64)>,
    alpha_pattern: Vec<(regex::Regex, f64)>,
}

fn bad_config(msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!("{CONFIG_FILE}: {msg}"))
}

/// PEFT's per-module pattern keys match a module path ending in the key.
fn pattern_regex(key: &str) -> Result<regex::Regex> {
    regex::Regex::new(&format!("^(?:.*\\.)?(?:{key})$"))
        .map_err(|e| bad_config(format!("pattern '{key}' is not a regular expression: {e}")))
}

impl LoraConfig {
    pub fn parse(text: &str) -> Result<Self> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| bad_config(format!("not JSON: {e}")))?;
        let Value::Object(m) = &v else {
            return Err(bad_config("not a JSON object"));
        };
        let peft_type = m.get("peft_type").and_then(Value::as_str).unwrap_or("LORA");
        if !peft_type.eq_ignore_ascii_case("lora") {
            return Err(Error::unsupported(format!(
                "{CONFIG_FILE}: peft_type {peft_type}: Marrow imports LoRA adapters only"
            )));
        }
        if m.get("use_dora").and_then(Value::as_bool) == Some(true) {
            return Err(Error::unsupported(format!(
                "{CONFIG_FILE}: DoRA adapters (use_dora) are not supported; only plain LoRA"
            )));
        }
        let rank = m
            .get("r")
            .and_then(Value::as_i64)
            .filter(|r| *r > 0)
            .ok_or_else(|| bad_config("r (the rank) must be a positive integer"))?;
        let alpha = match m.get("lora_alpha") {
            None | Some(Value::Null) => 8.0,
            Some(a) => a
                .as_f64()
                .ok_or_else(|| bad_config("lora_alpha must be a number"))?,
        };
        let targets =
            match m.get("target_modules") {
                Some(Value::String(s)) if s == "all-linear" => Targets::AllLinear,
                Some(Value::String(s)) => Targets::Pattern(
                    s.clone(),
                    regex::Regex::new(&format!("^(?:{s})$")).map_err(|e| {
                        bad_config(format!(
                            "target_modules '{s}' is not a regular expression: {e}"
                        ))
                    })?,
                ),
                Some(Value::Array(a)) => Targets::Names(
                    a.iter()
                        .map(|t| {
                            t.as_str()
                                .map(str::to_string)
                                .ok_or_else(|| bad_config("target_modules must be strings"))
                        })
                        .collect::<Result<_>>()?,
                ),
                _ => return Err(bad_config(
                    "target_modules (a list of module names or a regular expression) is missing",
                )),
            };
        let mut rank_pattern = vec![];
        if let Some(Value::Object(p)) = m.get("rank_pattern") {
            for (k, v) in p {
                let r = v.as_i64().filter(|r| *r > 0).ok_or_else(|| {
                    bad_config(format!("rank_pattern['{k}'] must be a positive integer"))
                })?;
                rank_pattern.push((pattern_regex(k)?, r));
            }
        }
        let mut alpha_pattern = vec![];
        if let Some(Value::Object(p)) = m.get("alpha_pattern") {
            for (k, v) in p {
                let a = v
                    .as_f64()
                    .ok_or_else(|| bad_config(format!("alpha_pattern['{k}'] must be a number")))?;
                alpha_pattern.push((pattern_regex(k)?, a));
            }
        }
        Ok(Self {
            text: text.to_string(),
            rank,
            alpha,
            use_rslora: m
                .get("use_rslora")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            fan_in_fan_out: m
                .get("fan_in_fan_out")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            base_model: m
                .get("base_model_name_or_path")
                .and_then(Value::as_str)
                .map(str::to_string),
            targets,
            rank_pattern,
            alpha_pattern,
        })
    }

    /// The rank and alpha PEFT uses for `module`: the first matching pattern key, else `r` / `lora_alpha`.
    fn rank_alpha(&self, module: &str) -> (i64, f64) {
        let rank = self
            .rank_pattern
            .iter()
            .find(|(re, _)| re.is_match(module))
            .map_or(self.rank, |(_, r)| *r);
        let alpha = self
            .alpha_pattern
            .iter()
            .find(|(re, _)| re.is_match(module))
            .map_or(self.alpha, |(_, a)| *a);
        (rank, alpha)
    }

    /// The factor on `B·A` for `module`.
    pub fn scale(&self, module: &str) -> f64 {
        let (rank, alpha) = self.rank_alpha(module);
        if self.use_rslora {
            alpha / (rank as f64).sqrt()
        } else {
            alpha / rank as f64
        }
    }
}

/// One adapted module: its `lora_A` [r, in] and `lora_B` [out, r] tensors.
#[derive(Debug, Clone)]
pub struct LoraPair {
    pub module: String,
    pub a: TensorInfo,
    pub b: TensorInfo,
}

/// What an adapter file holds: LoRA pairs, and whole tensors that replace the base's (`modules_to_save`).
#[derive(Debug, Default)]
pub struct AdapterTensors {
    pub pairs: Vec<LoraPair>,
    /// (tensor name in the file, the base tensor it replaces).
    pub replaced: Vec<(TensorInfo, String)>,
}

fn module_path(key: &str) -> &str {
    key.strip_prefix(PEFT_PREFIX).unwrap_or(key)
}

/// Check an adapter file's tensors against its config: every module has both halves, shapes [r, in] and
/// [out, r] with the config's rank, float dtypes, and only modules the config targets.
pub fn check_tensors(config: &LoraConfig, tensors: &[TensorInfo]) -> Result<AdapterTensors> {
    let mut halves: BTreeMap<String, (Option<TensorInfo>, Option<TensorInfo>)> = BTreeMap::new();
    let mut out = AdapterTensors::default();
    for t in tensors {
        let path = module_path(&t.name);
        if let Some(module) = path.strip_suffix(".lora_A.weight") {
            halves.entry(module.to_string()).or_default().0 = Some(t.clone());
        } else if let Some(module) = path.strip_suffix(".lora_B.weight") {
            halves.entry(module.to_string()).or_default().1 = Some(t.clone());
        } else if path.contains("lora_") {
            return Err(Error::unsupported(format!(
                "tensor {}: only lora_A / lora_B weights of linear layers are supported \
                 (not LoRA biases, embedding or convolution LoRA, or DoRA magnitudes)",
                t.name
            )));
        } else {
            // modules_to_save: a full copy of a base tensor, trained along with the adapter.
            out.replaced
                .push((t.clone(), path.replace(".modules_to_save", "")));
        }
    }
    for (module, (a, b)) in halves {
        let (Some(a), Some(b)) = (a, b) else {
            return Err(Error::invalid(format!(
                "module {module} has only one of lora_A and lora_B in {WEIGHTS_FILE}"
            )));
        };
        for t in [&a, &b] {
            if !matches!(t.dtype.as_str(), "F32" | "F16" | "BF16") {
                return Err(Error::invalid(format!(
                    "tensor {} has dtype {}; LoRA weights are F32, F16 or BF16",
                    t.name, t.dtype
                )));
            }
            if t.shape.len() != 2 {
                return Err(Error::invalid(format!(
                    "tensor {} has shape {:?}; LoRA weights are matrices",
                    t.name, t.shape
                )));
            }
        }
        let (rank, _) = config.rank_alpha(&module);
        if a.shape[0] != rank || b.shape[1] != rank {
            return Err(Error::invalid(format!(
                "module {module}: {CONFIG_FILE} gives rank {rank}, but lora_A is {:?} and lora_B is {:?} \
                 (expected [{rank}, in] and [out, {rank}])",
                a.shape, b.shape
            )));
        }
        if !config.targets.matches(&module) {
            return Err(Error::invalid(format!(
                "module {module} is adapted in {WEIGHTS_FILE} but is not in target_modules {:?}",
                config.targets.listed()
            )));
        }
        out.pairs.push(LoraPair { module, a, b });
    }
    if out.pairs.is_empty() {
        return Err(Error::invalid(format!(
            "{WEIGHTS_FILE} holds no lora_A / lora_B weights"
        )));
    }
    Ok(out)
}

/// Read and check a PEFT directory without writing anything.
fn read_dir(dir: &Path) -> Result<(LoraConfig, AdapterTensors)> {
    if !dir.is_dir() {
        return Err(Error::not_found(format!(
            "{} is not a directory (a PEFT adapter is a directory with {CONFIG_FILE} and {WEIGHTS_FILE})",
            dir.display()
        )));
    }
    let config_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| Error::not_found(format!("cannot read {}: {e}", config_path.display())))?;
    let config = LoraConfig::parse(&text)?;
    let weights_path = dir.join(WEIGHTS_FILE);
    if !weights_path.exists() {
        let msg = if dir.join("adapter_model.bin").exists() {
            format!(
                "{} holds adapter_model.bin (a pickle), which Marrow does not read: save the adapter \
                 with safe_serialization=True",
                dir.display()
            )
        } else {
            format!("{} has no {WEIGHTS_FILE}", dir.display())
        };
        return Err(Error::not_found(msg));
    }
    let header = weights::read_header(&weights_path)?;
    let tensors = check_tensors(&config, &header.tensors)?;
    Ok((config, tensors))
}

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
    let (config, tensors) = read_dir(dir)?;
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
            config.targets.listed().join(", ")
        )
    });
    let stats = weights::import_as(session, &dir.join(WEIGHTS_FILE), id, FORMAT, None).await?;
    let targets: Vec<String> = config.targets.listed().iter().map(|t| literal(t)).collect();
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

fn to_f32(dtype: &str, bytes: &[u8]) -> Result<Vec<f32>> {
    Ok(match dtype {
        "F32" => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        "F16" => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        "BF16" => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => {
            return Err(Error::unsupported(format!(
                "merging into a {other} tensor; LoRA merges into F32, F16 or BF16 weights"
            )))
        }
    })
}

fn from_f32(dtype: &str, values: &[f32]) -> Vec<u8> {
    match dtype {
        "F16" => values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
        "BF16" => values
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// `w += scale · (b · a)`, with `b` [out, r], `a` [r, in] and `w` [out, in] (or [in, out] when `transposed`, as
/// GPT-2's Conv1D layers store it). The product is formed in f32 row by row before scaling, as `scale * (B @ A)`.
#[allow(clippy::too_many_arguments)] // a BLAS-style kernel: the dimensions are the interface
pub fn add_lora(
    w: &mut [f32],
    a: &[f32],
    b: &[f32],
    out: usize,
    rank: usize,
    inp: usize,
    scale: f32,
    transposed: bool,
) {
    let mut row = vec![0f32; inp];
    for o in 0..out {
        row.fill(0.0);
        for k in 0..rank {
            let c = b[o * rank + k];
            for (r, x) in row.iter_mut().zip(&a[k * inp..(k + 1) * inp]) {
                *r += c * x;
            }
        }
        if transposed {
            for (i, d) in row.iter().enumerate() {
                w[i * out + o] += scale * d;
            }
        } else {
            for (x, d) in w[o * inp..(o + 1) * inp].iter_mut().zip(&row) {
                *x += scale * d;
            }
        }
    }
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
        let mut w = to_f32(&w_meta.dtype, &tensor_bytes(session, &base, name).await?)?;
        let a = to_f32(
            &pair.a.dtype,
            &tensor_bytes(session, id, &pair.a.name).await?,
        )?;
        let b = to_f32(
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

    fn info(name: &str, shape: &[i64]) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            dtype: "F32".into(),
            shape: shape.to_vec(),
            begin: 0,
            end: 0,
        }
    }

    const CONFIG: &str = r#"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["query", "value"],
        "rank_pattern": {"value": 2}, "alpha_pattern": {"layer.1.attention.self.query": 16},
        "base_model_name_or_path": "m"}"#;

    #[test]
    fn config_scales_follow_patterns_and_rslora() {
        let c = LoraConfig::parse(CONFIG).unwrap();
        assert_eq!(c.scale("encoder.layer.0.attention.self.query"), 2.0);
        assert_eq!(c.scale("encoder.layer.0.attention.self.value"), 4.0);
        assert_eq!(c.scale("encoder.layer.1.attention.self.query"), 4.0);
        let rs = LoraConfig::parse(
            r#"{"r": 16, "lora_alpha": 8, "use_rslora": true, "target_modules": "q"}"#,
        )
        .unwrap();
        assert_eq!(rs.scale("q"), 2.0);
    }

    #[test]
    fn tensors_must_match_the_config() {
        let c = LoraConfig::parse(CONFIG).unwrap();
        let p = "base_model.model.encoder.layer.0.attention.self";
        let ok = [
            info(&format!("{p}.query.lora_A.weight"), &[4, 8]),
            info(&format!("{p}.query.lora_B.weight"), &[8, 4]),
            info(&format!("{p}.value.lora_A.weight"), &[2, 8]),
            info(&format!("{p}.value.lora_B.weight"), &[8, 2]),
        ];
        let t = check_tensors(&c, &ok).unwrap();
        assert_eq!(t.pairs.len(), 2);
        // A rank that is not the config's.
        let mut bad = ok.clone();
        bad[2] = info(&format!("{p}.value.lora_A.weight"), &[4, 8]);
        assert!(check_tensors(&c, &bad)
            .unwrap_err()
            .message()
            .contains("rank 2"));
        // A half missing.
        assert!(check_tensors(&c, &ok[..3])
            .unwrap_err()
            .message()
            .contains("only one"));
        // A module the config does not target.
        let mut untargeted = ok.to_vec();
        untargeted.push(info(&format!("{p}.key.lora_A.weight"), &[4, 8]));
        untargeted.push(info(&format!("{p}.key.lora_B.weight"), &[8, 4]));
        assert!(check_tensors(&c, &untargeted)
            .unwrap_err()
            .message()
            .contains("not in target_modules"));
    }

    #[test]
    fn bad_configs_are_refused() {
        for (text, want) in [
            ("{", "not JSON"),
            (r#"{"r": 0, "target_modules": ["q"]}"#, "positive"),
            (r#"{"r": 4}"#, "target_modules"),
            (
                r#"{"peft_type": "IA3", "r": 4, "target_modules": ["q"]}"#,
                "LoRA adapters only",
            ),
            (
                r#"{"r": 4, "use_dora": true, "target_modules": ["q"]}"#,
                "DoRA",
            ),
        ] {
            let e = LoraConfig::parse(text).unwrap_err();
            assert!(e.message().contains(want), "{text}: {}", e.message());
        }
    }

    #[test]
    fn merge_math_matches_the_definition() {
        // w [2, 3], b [2, 1], a [1, 3]
        let a = [1.0, 2.0, 3.0];
        let b = [10.0, -1.0];
        let mut w = [0.0; 6];
        add_lora(&mut w, &a, &b, 2, 1, 3, 0.5, false);
        assert_eq!(w, [5.0, 10.0, 15.0, -0.5, -1.0, -1.5]);
        let mut wt = [0.0; 6];
        add_lora(&mut wt, &a, &b, 2, 1, 3, 0.5, true);
        assert_eq!(wt, [5.0, -0.5, 10.0, -1.0, 15.0, -1.5]);
    }

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
