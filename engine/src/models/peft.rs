//! The PEFT LoRA format: `adapter_config.json` (rank, alpha, target modules, patterns) checked against
//! `adapter_model.safetensors`, whose keys are `base_model.model.<module>.lora_A.weight` ([r, in]) and
//! `….lora_B.weight` ([out, r]).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::models::safetensors::{read_header, TensorInfo};

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The `models.format` of an adapter's tensors.
pub const FORMAT: &str = "peft-lora";
const PEFT_PREFIX: &str = "base_model.model.";

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

pub(crate) fn bad_config(msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!("{CONFIG_FILE}: {msg}"))
}

/// PEFT's per-module pattern keys match a module path ending in the key.
fn pattern_regex(key: &str) -> Result<regex::Regex> {
    regex::Regex::new(&format!("^(?:.*\\.)?(?:{key})$"))
        .map_err(|e| bad_config(format!("pattern '{key}' is not a regular expression: {e}")))
}

impl LoraConfig {
    /// The target modules as listed in the config (or its pattern).
    pub fn target_modules(&self) -> Vec<String> {
        self.targets.listed()
    }

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
pub(crate) fn read_dir(root: Option<&Path>, dir: &Path) -> Result<(LoraConfig, AdapterTensors)> {
    if !dir.is_dir() {
        return Err(Error::not_found(format!(
            "{} is not a directory (a PEFT adapter is a directory with {CONFIG_FILE} and {WEIGHTS_FILE})",
            dir.display()
        )));
    }
    let config_path = dir.join(CONFIG_FILE);
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut crate::fence::open_inside(root, &config_path)?,
        &mut text,
    )
    .map_err(|e| Error::invalid(format!("cannot read {}: {e}", config_path.display())))?;
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
    let header = read_header(root, &weights_path)?;
    let tensors = check_tensors(&config, &header.tensors)?;
    Ok((config, tensors))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::safetensors::TensorInfo;

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
}
