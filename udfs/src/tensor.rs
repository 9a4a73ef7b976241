//! Pure compute on model tensors: dtype conversion and the LoRA merge kernel (engine/src/models uses them).

/// Tensor bytes (little-endian F32, F16 or BF16, as safetensors stores them) as f32 values; None for other dtypes.
pub fn to_f32(dtype: &str, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
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
        _ => return None,
    })
}

/// f32 values as tensor bytes of `dtype` (F16, BF16; anything else as F32).
pub fn from_f32(dtype: &str, values: &[f32]) -> Vec<u8> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn half_precision_round_trips() {
        let v = [1.0f32, -2.5, 0.125];
        for dtype in ["F32", "F16", "BF16"] {
            assert_eq!(to_f32(dtype, &from_f32(dtype, &v)).unwrap(), v, "{dtype}");
        }
        assert!(to_f32("I8", &[1, 2]).is_none());
    }
}
