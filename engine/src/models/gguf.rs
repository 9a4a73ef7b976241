//! The GGUF format (version 3), written from a stored model.

use std::path::Path;
use std::sync::atomic::AtomicU64;

use crate::error::{Error, Result};
use crate::models::weights::{block_layout, stored_tensors, write_tensor_file, TensorMeta};
use crate::session::Session;

/// GGML type ids (ggml.h) of what Marrow writes to GGUF.
fn ggml_type(t: &TensorMeta) -> Option<u32> {
    Some(match (t.quantization.as_deref(), t.dtype.as_str()) {
        (None, "F32") => 0,
        (None, "F16") => 1,
        (None, "I8") => 24,
        (None, "I16") => 25,
        (None, "I32") => 26,
        (None, "I64") => 27,
        (None, "F64") => 28,
        (None, "BF16") => 30,
        (Some("q4_0"), _) => 2,
        (Some("q8_0"), _) => 8,
        (Some("q2_k"), _) => 10,
        (Some("q4_k"), _) => 12,
        _ => return None,
    })
}

const GGUF_ALIGNMENT: u64 = 32;

fn gguf_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Write model `model` as a GGUF (version 3) file: quantized tensors keep their GGML block bytes (q8_0, q4_0, q4_k,
/// q2_k), raw ones their dtype; dimensions innermost first, as GGML orders them; `general.name` and the model's
/// safetensors metadata as string key-values.
pub async fn export_gguf(
    session: &Session,
    model: &str,
    out: &Path,
    progress: Option<&AtomicU64>,
) -> Result<u64> {
    let (metadata, tensors) = stored_tensors(session, model).await?;
    let metadata = metadata.unwrap_or_default();
    let mut head = Vec::new();
    head.extend_from_slice(b"GGUF");
    head.extend_from_slice(&3u32.to_le_bytes());
    head.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    head.extend_from_slice(&(2 + metadata.len() as u64).to_le_bytes());
    gguf_string(&mut head, "general.name");
    head.extend_from_slice(&8u32.to_le_bytes()); // string
    gguf_string(&mut head, model);
    gguf_string(&mut head, "general.alignment");
    head.extend_from_slice(&4u32.to_le_bytes()); // uint32
    head.extend_from_slice(&(GGUF_ALIGNMENT as u32).to_le_bytes());
    for (k, v) in &metadata {
        gguf_string(&mut head, &format!("safetensors.{k}"));
        head.extend_from_slice(&8u32.to_le_bytes());
        gguf_string(&mut head, v);
    }
    let mut offset = 0u64;
    let mut plan = vec![];
    for t in &tensors {
        let ty = ggml_type(t).ok_or_else(|| {
            Error::unsupported(format!(
                "tensor {}: {} has no GGUF type Marrow writes",
                t.name,
                t.quantization.as_deref().unwrap_or(&t.dtype)
            ))
        })?;
        if let Some(q) = &t.quantization {
            let block = block_layout(q).map(|b| b.1).unwrap_or(1);
            let inner = t.shape.last().copied().unwrap_or(1) as u64;
            if !inner.is_multiple_of(block) {
                return Err(Error::invalid(format!(
                    "tensor {}: rows of {inner} values are not whole {q} blocks of {block}",
                    t.name
                )));
            }
        }
        gguf_string(&mut head, &t.name);
        let dims: Vec<u64> = if t.shape.is_empty() {
            vec![1]
        } else {
            t.shape.iter().rev().map(|d| *d as u64).collect()
        };
        head.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            head.extend_from_slice(&d.to_le_bytes());
        }
        head.extend_from_slice(&ty.to_le_bytes());
        head.extend_from_slice(&offset.to_le_bytes());
        plan.push((t, offset));
        offset = (offset + t.bytes).div_ceil(GGUF_ALIGNMENT) * GGUF_ALIGNMENT;
    }
    while !(head.len() as u64).is_multiple_of(GGUF_ALIGNMENT) {
        head.push(0);
    }
    let base = head.len() as u64;
    let plan: Vec<(&TensorMeta, u64)> = plan.into_iter().map(|(t, o)| (t, o + base)).collect();
    write_tensor_file(session, model, out, &head, &plan, progress).await
}
