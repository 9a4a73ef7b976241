//! A BERT encoder (all-MiniLM-L6-v2 and other `BertModel` sentence-transformers) read from `model.safetensors`:
//! embeddings, post-LayerNorm transformer layers with exact (erf) GELU, mean pooling over the attention mask and L2
//! normalization. Matrix products go through ndarray/matrixmultiply; batches of similar-length inputs are padded to a
//! common length and run together.

use std::path::Path;

use ndarray::{s, Array1, Array2, ArrayView2, Axis};
use safetensors::SafeTensors;

/// The architecture numbers read from the model's `config.json`.
#[derive(Debug, Clone)]
pub struct BertConfig {
    pub hidden: usize,
    pub heads: usize,
    pub layers: usize,
    pub intermediate: usize,
    pub max_positions: usize,
    pub eps: f32,
}

impl BertConfig {
    pub fn from_json(text: &str) -> Result<Self, String> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("config.json: {e}"))?;
        let get = |k: &str| -> Result<usize, String> {
            v.get(k)
                .and_then(|x| x.as_u64())
                .map(|x| x as usize)
                .ok_or_else(|| format!("config.json: missing {k}"))
        };
        if let Some(act) = v.get("hidden_act").and_then(|a| a.as_str()) {
            if act != "gelu" {
                return Err(format!(
                    "config.json: hidden_act {act} is not supported (gelu only)"
                ));
            }
        }
        let cfg = Self {
            hidden: get("hidden_size")?,
            heads: get("num_attention_heads")?,
            layers: get("num_hidden_layers")?,
            intermediate: get("intermediate_size")?,
            max_positions: get("max_position_embeddings")?,
            eps: v
                .get("layer_norm_eps")
                .and_then(|x| x.as_f64())
                .unwrap_or(1e-12) as f32,
        };
        if !cfg.hidden.is_multiple_of(cfg.heads) {
            return Err("config.json: hidden_size is not a multiple of num_attention_heads".into());
        }
        Ok(cfg)
    }
}

struct Linear {
    /// Stored transposed ([in, out]) so that `x · w` needs no transpose per call.
    w: Array2<f32>,
    b: Array1<f32>,
}

impl Linear {
    fn forward(&self, x: &ArrayView2<f32>) -> Array2<f32> {
        let mut y = x.dot(&self.w);
        y += &self.b;
        y
    }
}

struct LayerNorm {
    g: Array1<f32>,
    b: Array1<f32>,
    eps: f32,
}

impl LayerNorm {
    fn forward_inplace(&self, x: &mut Array2<f32>) {
        let n = x.ncols() as f32;
        for mut row in x.rows_mut() {
            let mean = row.sum() / n;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
            let inv = 1.0 / (var + self.eps).sqrt();
            for ((v, g), b) in row.iter_mut().zip(self.g.iter()).zip(self.b.iter()) {
                *v = (*v - mean) * inv * g + b;
            }
        }
    }
}

struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    out_norm: LayerNorm,
}

/// The loaded encoder.
pub struct Bert {
    cfg: BertConfig,
    word: Array2<f32>,
    position: Array2<f32>,
    token_type: Array2<f32>,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
}

impl std::fmt::Debug for Bert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bert").field("config", &self.cfg).finish()
    }
}

fn tensor(st: &SafeTensors, name: &str, shape: &[usize]) -> Result<Vec<f32>, String> {
    let t = st
        .tensor(name)
        .map_err(|e| format!("model.safetensors: {name}: {e}"))?;
    if t.dtype() != safetensors::Dtype::F32 {
        return Err(format!(
            "model.safetensors: {name} is {:?}, expected F32",
            t.dtype()
        ));
    }
    if t.shape() != shape {
        return Err(format!(
            "model.safetensors: {name} has shape {:?}, expected {shape:?}",
            t.shape()
        ));
    }
    Ok(t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn matrix(st: &SafeTensors, name: &str, rows: usize, cols: usize) -> Result<Array2<f32>, String> {
    Array2::from_shape_vec((rows, cols), tensor(st, name, &[rows, cols])?)
        .map_err(|e| e.to_string())
}

fn vector(st: &SafeTensors, name: &str, n: usize) -> Result<Array1<f32>, String> {
    Ok(Array1::from_vec(tensor(st, name, &[n])?))
}

/// PyTorch Linear weights are [out, in]; keep them as [in, out].
fn linear(st: &SafeTensors, prefix: &str, input: usize, output: usize) -> Result<Linear, String> {
    let w = matrix(st, &format!("{prefix}.weight"), output, input)?;
    Ok(Linear {
        w: w.t().as_standard_layout().into_owned(),
        b: vector(st, &format!("{prefix}.bias"), output)?,
    })
}

fn norm(st: &SafeTensors, prefix: &str, n: usize, eps: f32) -> Result<LayerNorm, String> {
    Ok(LayerNorm {
        g: vector(st, &format!("{prefix}.weight"), n)?,
        b: vector(st, &format!("{prefix}.bias"), n)?,
        eps,
    })
}

/// erf-based GELU, as BERT's `gelu` (not the tanh approximation).
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x / std::f32::consts::SQRT_2))
}

/// erf with max error ~1.2e-7 (Numerical Recipes' erfc, Chebyshev fit), evaluated in f64.
fn erf(x: f32) -> f32 {
    let x = x as f64;
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    (if x >= 0.0 { 1.0 - r } else { r - 1.0 }) as f32
}

impl Bert {
    pub fn load(dir: &Path) -> Result<Self, String> {
        let cfg_text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| format!("{}: {e}", dir.join("config.json").display()))?;
        let cfg = BertConfig::from_json(&cfg_text)?;
        let bytes = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| format!("{}: {e}", dir.join("model.safetensors").display()))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| format!("model.safetensors: {e}"))?;
        let h = cfg.hidden;
        let vocab = st
            .tensor("embeddings.word_embeddings.weight")
            .map_err(|e| format!("model.safetensors: {e}"))?
            .shape()[0];
        let word = matrix(&st, "embeddings.word_embeddings.weight", vocab, h)?;
        let position = matrix(
            &st,
            "embeddings.position_embeddings.weight",
            cfg.max_positions,
            h,
        )?;
        let types = st
            .tensor("embeddings.token_type_embeddings.weight")
            .map_err(|e| format!("model.safetensors: {e}"))?
            .shape()[0];
        let token_type = matrix(&st, "embeddings.token_type_embeddings.weight", types, h)?;
        let emb_norm = norm(&st, "embeddings.LayerNorm", h, cfg.eps)?;
        let mut layers = vec![];
        for i in 0..cfg.layers {
            let p = format!("encoder.layer.{i}");
            layers.push(Layer {
                q: linear(&st, &format!("{p}.attention.self.query"), h, h)?,
                k: linear(&st, &format!("{p}.attention.self.key"), h, h)?,
                v: linear(&st, &format!("{p}.attention.self.value"), h, h)?,
                attn_out: linear(&st, &format!("{p}.attention.output.dense"), h, h)?,
                attn_norm: norm(&st, &format!("{p}.attention.output.LayerNorm"), h, cfg.eps)?,
                ffn_in: linear(&st, &format!("{p}.intermediate.dense"), h, cfg.intermediate)?,
                ffn_out: linear(&st, &format!("{p}.output.dense"), cfg.intermediate, h)?,
                out_norm: norm(&st, &format!("{p}.output.LayerNorm"), h, cfg.eps)?,
            });
        }
        Ok(Self {
            cfg,
            word,
            position,
            token_type,
            emb_norm,
            layers,
        })
    }

    pub fn dim(&self) -> usize {
        self.cfg.hidden
    }

    pub fn max_positions(&self) -> usize {
        self.cfg.max_positions
    }

    pub fn vocab_size(&self) -> usize {
        self.word.nrows()
    }

    /// Sentence embeddings (mean-pooled, L2-normalized) for a batch of token id sequences, each at most
    /// `max_positions` long. Sequences are padded to the batch's longest; padding is masked out of attention and
    /// pooling, so every row equals what it would be alone.
    pub fn embed_batch(&self, batch: &[&[u32]]) -> Vec<Vec<f32>> {
        let h = self.cfg.hidden;
        let len = batch.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
        let b = batch.len();
        let mut x = Array2::<f32>::zeros((b * len, h));
        for (i, ids) in batch.iter().enumerate() {
            for t in 0..len {
                let mut row = x.row_mut(i * len + t);
                if let Some(&id) = ids.get(t) {
                    let id = (id as usize).min(self.word.nrows() - 1);
                    row.assign(&self.word.row(id));
                }
                row += &self.position.row(t);
                row += &self.token_type.row(0);
            }
        }
        self.emb_norm.forward_inplace(&mut x);
        let lens: Vec<usize> = batch.iter().map(|s| s.len()).collect();
        for layer in &self.layers {
            x = self.layer(layer, x, b, len, &lens);
        }
        // Mean pooling over real tokens, then L2 normalization.
        let mut out = Vec::with_capacity(b);
        for (i, &n) in lens.iter().enumerate() {
            let mut v = vec![0f32; h];
            if n > 0 {
                let rows = x.slice(s![i * len..i * len + n, ..]);
                for (j, col) in rows.axis_iter(Axis(1)).enumerate() {
                    v[j] = col.sum() / n as f32;
                }
            }
            let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
            v.iter_mut().for_each(|a| *a /= norm);
            out.push(v);
        }
        out
    }

    fn layer(
        &self,
        l: &Layer,
        x: Array2<f32>,
        b: usize,
        len: usize,
        lens: &[usize],
    ) -> Array2<f32> {
        let h = self.cfg.hidden;
        let heads = self.cfg.heads;
        let d = h / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let xv = x.view();
        let q = l.q.forward(&xv);
        let k = l.k.forward(&xv);
        let v = l.v.forward(&xv);
        let mut ctx = Array2::<f32>::zeros((b * len, h));
        for (i, &real) in lens.iter().enumerate().take(b) {
            let n = real.max(1).min(len);
            let rows = i * len..i * len + len;
            for hd in 0..heads {
                let cols = hd * d..(hd + 1) * d;
                let qh = q.slice(s![rows.clone(), cols.clone()]);
                // Only real tokens are attended to: keys and values of padding are left out.
                let kh = k.slice(s![i * len..i * len + n, cols.clone()]);
                let vh = v.slice(s![i * len..i * len + n, cols.clone()]);
                let mut scores = qh.dot(&kh.t());
                for mut row in scores.rows_mut() {
                    let mut max = f32::NEG_INFINITY;
                    for s in row.iter_mut() {
                        *s *= scale;
                        max = max.max(*s);
                    }
                    let mut sum = 0.0;
                    for s in row.iter_mut() {
                        *s = (*s - max).exp();
                        sum += *s;
                    }
                    row.mapv_inplace(|s| s / sum);
                }
                ctx.slice_mut(s![rows.clone(), cols])
                    .assign(&scores.dot(&vh));
            }
        }
        let mut y = l.attn_out.forward(&ctx.view());
        y += &x;
        l.attn_norm.forward_inplace(&mut y);
        let mut inner = l.ffn_in.forward(&y.view());
        inner.mapv_inplace(gelu);
        let mut out = l.ffn_out.forward(&inner.view());
        out += &y;
        l.out_norm.forward_inplace(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::erf;

    #[test]
    fn erf_matches_reference_values() {
        for (x, want) in [
            (0.0f32, 0.0f64),
            (0.5, 0.520_499_877_8),
            (1.0, 0.842_700_792_9),
            (-2.0, -0.995_322_265),
            (3.5, 0.999_999_256_9),
        ] {
            assert!((erf(x) as f64 - want).abs() < 2e-7, "erf({x})");
        }
    }
}
