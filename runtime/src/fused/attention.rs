//! A layer's scaled dot-product attention (scores, key mask, softmax, weighted values) as one operator.
//!
//! The exporter writes attention as standard ONNX (`MatMul(Q, Kᵀ) + mask → Softmax → MatMul(·, V)`, the 1/√d
//! folded into Q's weights), which tract's declutter turns into
//!
//! ```text
//! scores  = EinSum(q, k)        [b, t, h, d] × [b, t', h, d] → [b, h, t, t']
//! masked  = scores + mask       mask [b | 1, 1, 1, t']: 0 for a real key, −10000 for padding
//! probs   = Softmax(masked)     over t' (our RowSoftmax once `softmax` has run)
//! context = EinSum(probs, v)    → [b, t, h, d]
//! ```
//!
//! or the same without the batch axis on q, k, v and the context (`[t, h, d]`, batch 1) where tract's declutter
//! dropped it (the f32 package form).
//!
//! Each of the two einsums is a batch of `heads` tiny matmuls (16 × 32 by 32 × 16 at 16 tokens) that tract
//! packs and dispatches one by one: with their packing, the mask add and the softmax they cost 0.064 of a 0.30 ms
//! fused int8 layer at 16 tokens and 0.25 of 1.17 ms at 64 on an AMD EPYC Zen 4 (`examples/fusion.rs --by-node`),
//! about a fifth of the layer, for 1–2 % of its multiply-adds. [`Attention`] copies each head's keys and values
//! once into blocks its loops walk in order, and keeps a query's scores in cache from the dot products to its
//! context row, with the partial sums in registers.
//! Where the CPU has AVX-512 the queries go in groups of four (`wide`): each key or value vector loaded serves
//! the four, which made the operator 1.3–1.5× faster on a Xeon at 16 and 64 tokens (0.034 → 0.022 ms, 0.209 →
//! 0.155 ms per layer, `examples/fusion.rs --profile`, 2026-12-07).
//!
//! Numerics: every sum runs in a fixed order (a score over d in four interleaved partial sums, a context element
//! over t' in two, each element on its own vector lane; the softmax is [`super::softmax`]'s), with fused
//! multiply-adds where the CPU has them (x86 with FMA, every aarch64) and separate ones elsewhere: the result is the
//! same on every CPU of either kind whatever its vector width (an x86 with FMA and an aarch64 agree bit for bit), but
//! not tract's order, so outputs differ from the plain graph's in their last bits. Portable-numerics packages spell
//! the softmax out with `Exp` and a matmul and are untouched.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::math::Add;
use tract_onnx::tract_core::ops::nn::{Softmax, SoftmaxKind};

use super::softmax::{softmax_row_body, RowSoftmax};
use super::used_once;

/// Attention over `[batch, tokens, heads, head_dim]` (or `[tokens, heads, head_dim]`) f32 queries, keys and values
/// with an additive key mask `[batch | 1, 1, 1, tokens]`; the output has the queries' shape. Stateless: the shapes
/// come with the inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attention;

/// The extents of q, k, v and the output.
#[derive(Debug, Clone, Copy)]
struct Dims {
    batch: usize,
    tokens: usize,
    heads: usize,
    head_dim: usize,
}

/// `out = softmax(q·kᵀ + mask)·v` per batch and head, all four row-major `[batch, tokens, heads, head_dim]`;
/// `mask` is `tokens` values per batch (or one row for every batch when it holds only `tokens`).
fn attend(q: &[f32], k: &[f32], v: &[f32], mask: &[f32], dims: Dims, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if wide::available() {
            // SAFETY: the CPU has AVX-512F, AVX2 and FMA, checked just above.
            return unsafe { attend_avx512(q, k, v, mask, dims, out) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            return unsafe { attend_avx2_fma(q, k, v, mask, dims, out) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { attend_avx2(q, k, v, mask, dims, out) };
        }
    }
    // Every aarch64 CPU has fused multiply-add in its vector unit.
    attend_body::<{ cfg!(target_arch = "aarch64") }>(q, k, v, mask, dims, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn attend_avx512(q: &[f32], k: &[f32], v: &[f32], mask: &[f32], dims: Dims, out: &mut [f32]) {
    attend_heads::<true>(q, k, v, mask, dims, out, |rows| wide::queries(rows))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_avx2_fma(q: &[f32], k: &[f32], v: &[f32], mask: &[f32], dims: Dims, out: &mut [f32]) {
    attend_body::<true>(q, k, v, mask, dims, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn attend_avx2(q: &[f32], k: &[f32], v: &[f32], mask: &[f32], dims: Dims, out: &mut [f32]) {
    attend_body::<false>(q, k, v, mask, dims, out)
}

/// Keys per block of the score loop, with four partial sums per score: 4 × 16 accumulators stay in registers while
/// a block's scores are summed over d (8 ymm or 4 zmm), enough independent additions to hide their latency.
const KEY_BLOCK: usize = 16;
/// Context elements per block of the value loop, with two partial sums each (8 ymm or 4 zmm).
const DIM_BLOCK: usize = 32;

#[inline(always)]
fn attend_body<const FMA: bool>(q: &[f32], k: &[f32], v: &[f32], mask: &[f32], dims: Dims, out: &mut [f32]) {
    attend_heads::<FMA>(q, k, v, mask, dims, out, |rows| {
        for query in 0..rows.queries {
            let q_row = &rows.q[query * rows.q_stride..][..rows.d];
            scores_of::<FMA>(q_row, rows.keys, rows.scores);
            finish_scores(rows.scores, rows.mask);
            context_of::<FMA>(&rows.scores[..rows.mask.len()], rows.values, rows.context);
            rows.out[query * rows.q_stride..][..rows.d].copy_from_slice(&rows.context[..rows.d]);
        }
    })
}

/// One head's queries with its keys and values laid out in blocks: what the per-query loops read and write.
struct HeadRows<'a> {
    /// The head's first query row (`queries` rows of `d` values, `q_stride` apart); the output likewise.
    q: &'a [f32],
    out: &'a mut [f32],
    queries: usize,
    q_stride: usize,
    d: usize,
    /// Keys as `[t_pad / 16][d][16]`, values as `[d_pad / 32][t][32]`, zero-padded.
    keys: &'a [f32],
    values: &'a [f32],
    /// The additive key mask, one per real key (`t` values).
    mask: &'a [f32],
    /// Room for the scores of up to [`wide::QUERIES`] queries (`t_pad` each) and one context row (`d_pad`).
    scores: &'a mut [f32],
    context: &'a mut [f32],
}

/// The mask added to a row of scores (its real keys), then their softmax.
#[inline(always)]
fn finish_scores(scores: &mut [f32], mask: &[f32]) {
    for (s, &m) in scores.iter_mut().zip(mask) {
        *s += m;
    }
    softmax_row_body(&mut scores[..mask.len()]);
}

/// Lays out each head's keys and values in blocks and hands its queries to `queries`.
#[inline(always)]
fn attend_heads<const FMA: bool>(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: &[f32],
    dims: Dims,
    out: &mut [f32],
    mut queries: impl FnMut(HeadRows<'_>),
) {
    let Dims { batch, tokens: t, heads, head_dim: d } = dims;
    let row = heads * d; // one token's q (or k, v, out) over every head
    let t_pad = t.div_ceil(KEY_BLOCK) * KEY_BLOCK;
    let d_pad = d.div_ceil(DIM_BLOCK) * DIM_BLOCK;
    // One head's keys as [t_pad / 16][d][16] and values as [d_pad / 32][t][32], zero-padded: the hot loops walk
    // them in order, in whole blocks.
    let mut keys = vec![0f32; t_pad * d];
    let mut values = vec![0f32; d_pad * t];
    let mut scores = vec![0f32; t_pad * wide::QUERIES];
    let mut context = vec![0f32; d_pad];
    for b in 0..batch {
        let mask = if mask.len() == t { mask } else { &mask[b * t..(b + 1) * t] };
        let base = b * t * row;
        for h in 0..heads {
            for key in 0..t {
                let (key_block, lane) = (key / KEY_BLOCK, key % KEY_BLOCK);
                for (dim, &value) in k[base + key * row + h * d..][..d].iter().enumerate() {
                    keys[(key_block * d + dim) * KEY_BLOCK + lane] = value;
                }
                for (block, chunk) in v[base + key * row + h * d..][..d].chunks(DIM_BLOCK).enumerate() {
                    values[(block * t + key) * DIM_BLOCK..][..chunk.len()].copy_from_slice(chunk);
                }
            }
            let first = base + h * d;
            queries(HeadRows {
                q: &q[first..],
                out: &mut out[first..],
                queries: t,
                q_stride: row,
                d,
                keys: &keys,
                values: &values,
                mask,
                scores: &mut scores,
                context: &mut context,
            });
        }
    }
}

/// `scores[j] = Σ_dim q[dim]·k[j, dim]` for every (padded) key j: dim mod 4 picks one of four partial sums, each
/// summed in order, then ((s0 + s1) + (s2 + s3)).
#[inline(always)]
fn scores_of<const FMA: bool>(q_row: &[f32], keys: &[f32], scores: &mut [f32]) {
    const PARTIALS: usize = 4;
    let d = q_row.len();
    for (out, block) in scores.chunks_exact_mut(KEY_BLOCK).zip(keys.chunks_exact(d * KEY_BLOCK)) {
        let mut acc = [[0f32; KEY_BLOCK]; PARTIALS];
        let (mut q_quads, mut k_quads) = (q_row.chunks_exact(PARTIALS), block.chunks_exact(PARTIALS * KEY_BLOCK));
        for (q4, k4) in (&mut q_quads).zip(&mut k_quads) {
            // a fixed count: unrolled, each partial a register
            for p in 0..PARTIALS {
                add_scaled::<FMA, KEY_BLOCK>(&mut acc[p], q4[p], &k4[p * KEY_BLOCK..(p + 1) * KEY_BLOCK]);
            }
        }
        for ((partial, &qd), k1) in
            acc.iter_mut().zip(q_quads.remainder()).zip(k_quads.remainder().chunks_exact(KEY_BLOCK))
        {
            add_scaled::<FMA, KEY_BLOCK>(partial, qd, k1);
        }
        for (lane, o) in out.iter_mut().enumerate() {
            *o = (acc[0][lane] + acc[1][lane]) + (acc[2][lane] + acc[3][lane]);
        }
    }
}

/// `context[dim] = Σ_j p[j]·v[j, dim]`: j mod 2 picks one of two partial sums, each summed in order, then s0 + s1.
#[inline(always)]
fn context_of<const FMA: bool>(probs: &[f32], values: &[f32], context: &mut [f32]) {
    let t = probs.len();
    for (out, block) in context.chunks_exact_mut(DIM_BLOCK).zip(values.chunks_exact(t * DIM_BLOCK)) {
        let mut acc = [[0f32; DIM_BLOCK]; 2];
        let (mut p_pairs, mut v_pairs) = (probs.chunks_exact(2), block.chunks_exact(2 * DIM_BLOCK));
        for (p2, v2) in (&mut p_pairs).zip(&mut v_pairs) {
            add_scaled::<FMA, DIM_BLOCK>(&mut acc[0], p2[0], &v2[..DIM_BLOCK]);
            add_scaled::<FMA, DIM_BLOCK>(&mut acc[1], p2[1], &v2[DIM_BLOCK..]);
        }
        if let (&[p], v1) = (p_pairs.remainder(), v_pairs.remainder()) {
            add_scaled::<FMA, DIM_BLOCK>(&mut acc[0], p, v1);
        }
        for (lane, o) in out.iter_mut().enumerate() {
            *o = acc[0][lane] + acc[1][lane];
        }
    }
}

/// `acc += scale · x`, lane by lane: one rounding with `FMA` (a fused multiply-add, where the CPU has it), two
/// without. Either way each lane's sum runs in the same order on every CPU.
#[inline(always)]
fn add_scaled<const FMA: bool, const N: usize>(acc: &mut [f32; N], scale: f32, x: &[f32]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a = if FMA { scale.mul_add(v, *a) } else { *a + scale * v };
    }
}

/// The same sums for [`QUERIES`](wide::QUERIES) queries at a time in zmm registers (AVX-512): each key or value
/// vector loaded once serves every query of the group. Each sum runs in the order of [`scores_of`] and [`context_of`]
/// with fused multiply-adds, so the results are the FMA path's bit for bit.
mod wide {
    #[cfg(target_arch = "x86_64")]
    use super::{finish_scores, HeadRows, DIM_BLOCK, KEY_BLOCK};

    /// Queries per group: 4 × 4 score partials or 4 × 2 × 2 context partials, 16 zmm accumulators.
    pub(super) const QUERIES: usize = 4;

    /// Whether the CPU has AVX-512F (and the AVX2 and FMA of the narrower path).
    #[cfg(target_arch = "x86_64")]
    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
    }

    /// Every query of the head, in groups of [`QUERIES`]. The caller checks [`available`].
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(super) unsafe fn queries(mut rows: HeadRows<'_>) {
        let mut first = 0;
        while first < rows.queries {
            match rows.queries - first {
                1 => group::<1>(&mut rows, first),
                2 => group::<2>(&mut rows, first),
                3 => group::<3>(&mut rows, first),
                _ => group::<QUERIES>(&mut rows, first),
            }
            first += QUERIES;
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[inline]
    unsafe fn group<const G: usize>(rows: &mut HeadRows<'_>, first: usize) {
        use std::arch::x86_64::*;
        let (d, t, stride) = (rows.d, rows.mask.len(), rows.q_stride);
        let t_pad = t.div_ceil(KEY_BLOCK) * KEY_BLOCK;
        let q = rows.q.as_ptr().add(first * stride);
        let scores = rows.scores.as_mut_ptr();
        // Scores: per block of 16 keys, four partial sums per query over d mod 4, then ((s0 + s1) + (s2 + s3)).
        for block in 0..t_pad / KEY_BLOCK {
            let keys = rows.keys.as_ptr().add(block * d * KEY_BLOCK);
            let mut acc = [[_mm512_setzero_ps(); 4]; G];
            let quads = d / 4;
            for quad in 0..quads {
                for p in 0..4 {
                    let dim = quad * 4 + p;
                    let k = _mm512_loadu_ps(keys.add(dim * KEY_BLOCK));
                    for (g, acc) in acc.iter_mut().enumerate() {
                        acc[p] = _mm512_fmadd_ps(_mm512_set1_ps(*q.add(g * stride + dim)), k, acc[p]);
                    }
                }
            }
            for p in 0..d % 4 {
                let dim = quads * 4 + p;
                let k = _mm512_loadu_ps(keys.add(dim * KEY_BLOCK));
                for (g, acc) in acc.iter_mut().enumerate() {
                    acc[p] = _mm512_fmadd_ps(_mm512_set1_ps(*q.add(g * stride + dim)), k, acc[p]);
                }
            }
            for (g, acc) in acc.iter().enumerate() {
                let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
                _mm512_storeu_ps(scores.add(g * t_pad + block * KEY_BLOCK), sum);
            }
        }
        for g in 0..G {
            finish_scores(std::slice::from_raw_parts_mut(scores.add(g * t_pad), t_pad), rows.mask);
        }
        // Context: per block of 32 dims, two partial sums per query over the key's parity, then s0 + s1.
        let out = rows.out.as_mut_ptr();
        for block in 0..d.div_ceil(DIM_BLOCK) {
            let values = rows.values.as_ptr().add(block * t * DIM_BLOCK);
            let mut acc = [[[_mm512_setzero_ps(); 2]; 2]; G];
            for key in 0..t {
                let v =
                    [_mm512_loadu_ps(values.add(key * DIM_BLOCK)), _mm512_loadu_ps(values.add(key * DIM_BLOCK + 16))];
                for (g, acc) in acc.iter_mut().enumerate() {
                    let p = _mm512_set1_ps(*scores.add(g * t_pad + key));
                    let partial = &mut acc[key % 2];
                    partial[0] = _mm512_fmadd_ps(p, v[0], partial[0]);
                    partial[1] = _mm512_fmadd_ps(p, v[1], partial[1]);
                }
            }
            let dims = (d - block * DIM_BLOCK).min(DIM_BLOCK);
            for (g, acc) in acc.iter().enumerate() {
                let o = out.add((first + g) * stride + block * DIM_BLOCK);
                let [even, odd] = acc;
                for (half, (&even, &odd)) in even.iter().zip(odd).enumerate() {
                    let lanes = dims.saturating_sub(half * 16).min(16);
                    let mask: __mmask16 = if lanes >= 16 { 0xffff } else { (1u16 << lanes) - 1 };
                    _mm512_mask_storeu_ps(o.add(half * 16), mask, _mm512_add_ps(even, odd));
                }
            }
        }
    }
}

/// A tensor's f32 values in row-major order (a copy only if its layout is not the natural one).
fn row_major(t: &TValue) -> TractResult<std::borrow::Cow<'_, [f32]>> {
    if t.strides() == &*Tensor::natural_strides(t.shape()) {
        return Ok(std::borrow::Cow::Borrowed(t.try_as_plain_ram()?.as_slice::<f32>()?));
    }
    let array = t.clone().into_tensor().into_plain_array::<f32>()?;
    Ok(std::borrow::Cow::Owned(array.as_standard_layout().iter().copied().collect()))
}

impl Op for Attention {
    fn name(&self) -> StaticName {
        "Attention".into()
    }

    op_as_typed_op!();
}

impl EvalOp for Attention {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (q, k, v, mask) = args_4!(inputs);
        let (batch, tokens, heads, head_dim) = match *q.shape() {
            [batch, tokens, heads, head_dim] => (batch, tokens, heads, head_dim),
            [tokens, heads, head_dim] => (1, tokens, heads, head_dim),
            _ => bail!("Attention: q of shape {:?}", q.shape()),
        };
        ensure!(k.shape() == q.shape() && v.shape() == q.shape(), "Attention: q, k, v of different shapes");
        ensure!(
            mask.len() == tokens || mask.len() == batch * tokens,
            "Attention: a mask of {:?} for {tokens} keys",
            mask.shape()
        );
        let dims = Dims { batch, tokens, heads, head_dim };
        let mut output = Tensor::zero::<f32>(q.shape())?;
        if output.len() == 0 {
            return Ok(tvec!(output.into_tvalue())); // nothing to attend (and no block size of zero below)
        }
        {
            let mut plain = output.try_as_plain_ram_mut()?;
            let (q, k, v, mask) = (row_major(&q)?, row_major(&k)?, row_major(&v)?, row_major(&mask)?);
            attend(&q, &k, &v, &mask, dims, plain.as_slice_mut::<f32>()?);
        }
        Ok(tvec!(output.into_tvalue()))
    }
}

impl TypedOp for Attention {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs.len() == 4 && inputs.iter().all(|f| f.datum_type == f32::datum_type()),
            "Attention takes four f32 inputs, got {inputs:?}"
        );
        Ok(tvec!(f32::fact(inputs[0].shape.clone())))
    }
}

/// Replaces every attention of the decluttered `model` (the pattern of the module's documentation) by an
/// [`Attention`]; returns how many.
pub fn fuse(model: &mut TypedModel) -> TractResult<usize> {
    super::replace_all(model, "attention", |model, node| {
        Ok(matched(model, node)?.map(|f| super::Replacement {
            named_after: f.end,
            inputs: f.inputs.into_iter().collect(),
            op: Attention,
            replaces: tvec![f.end.into()],
        }))
    })
}

struct Found {
    /// q, k, v and the additive mask.
    inputs: [OutletId; 4],
    /// The context einsum, whose output the fused op replaces.
    end: usize,
}

/// An einsum's axes with each letter renamed by first appearance ("ambk,anbk->abmn" is "abcd,aecd->acbe"):
/// what the expression means, whatever letters tract chose.
fn canonical_axes(einsum: &EinSum) -> String {
    let mut names: Vec<char> = Vec::new();
    einsum
        .axes
        .to_string()
        .chars()
        .map(|c| {
            if !c.is_ascii_alphabetic() {
                return c;
            }
            let k = names.iter().position(|&n| n == c).unwrap_or_else(|| {
                names.push(c);
                names.len() - 1
            });
            (b'a' + k as u8) as char
        })
        .collect()
}

/// A plain f32 einsum of two inputs computing `axes` (canonical form): its inputs.
fn einsum_inputs(model: &TypedModel, node: usize, axes: &str) -> Option<[OutletId; 2]> {
    let node = model.node(node);
    let einsum = node.op_as::<EinSum>()?;
    let plain = einsum.q_params.is_none() && einsum.operating_dt == f32::datum_type();
    match node.inputs.as_slice() {
        &[a, b] if plain && canonical_axes(einsum) == axes => Some([a, b]),
        _ => None,
    }
}

/// Whether `node` is a softmax over the scores' last axis: tract's over axis 3, or our [`RowSoftmax`] (always the
/// last axis; the einsums around it fix the rank at 4).
fn is_last_axis_softmax(model: &TypedModel, node: usize) -> bool {
    let node = model.node(node);
    if node.op_is::<RowSoftmax>() {
        return true;
    }
    node.op_as::<Softmax>()
        .is_some_and(|s| s.kind == SoftmaxKind::Softmax && s.quant_output_dt.is_none() && s.axes.as_slice() == [3])
}

/// The two layouts tract's declutter leaves attention in: the context einsum's and the scores einsum's axes
/// (canonical form), and the rank of q, k and v.
const LAYOUTS: [(&str, &str, usize); 2] = [
    // context = probs · v: [b, h, t, t'] × [b, t', h, d] → [b, t, h, d]; scores = q · kᵀ → [b, h, t, t']
    ("abcd,adbe->acbe", "abcd,aecd->acbe", 4),
    // the same with the batch axis dropped from q, k, v and the context (the f32 form)
    ("abcd,dbe->cbe", "abc,dbc->ebad", 3),
];

/// The attention ending in the context einsum `end`, if it is one.
fn matched(model: &TypedModel, end: usize) -> TractResult<Option<Found>> {
    let Some((scores_axes, rank, [probs, v])) = LAYOUTS
        .iter()
        .find_map(|&(context, scores, rank)| einsum_inputs(model, end, context).map(|pv| (scores, rank, pv)))
    else {
        return Ok(None);
    };
    if !used_once(model, probs) || !is_last_axis_softmax(model, probs.node) {
        return Ok(None);
    }
    let Some(masked) = super::single_input_node(model, probs.node) else { return Ok(None) };
    let masked_out = OutletId::new(masked, 0);
    let Some(added) = super::binary_inputs::<Add>(model, masked) else { return Ok(None) };
    if !used_once(model, masked_out) {
        return Ok(None);
    }
    // The scores einsum, either side of the add; the mask the other.
    let Some((scores, mask, [q, k])) = [(added[0], added[1]), (added[1], added[0])].into_iter().find_map(|(s, m)| {
        einsum_inputs(model, s.node, scores_axes).filter(|_| used_once(model, s)).map(|qk| (s, m, qk))
    }) else {
        return Ok(None);
    };
    let (q_fact, k_fact, v_fact) = (model.outlet_fact(q)?, model.outlet_fact(k)?, model.outlet_fact(v)?);
    let mask_fact = model.outlet_fact(mask)?;
    let f32s = [q_fact, k_fact, v_fact, mask_fact].iter().all(|f| f.datum_type == f32::datum_type());
    let same = q_fact.rank() == rank && k_fact.shape == q_fact.shape && v_fact.shape == q_fact.shape;
    if !f32s || !same || mask_fact.rank() != 4 {
        return Ok(None);
    }
    // The mask adds one value per key, the same for every head and query (so the add does not broaden the scores).
    let (shape, m) = (&q_fact.shape, &mask_fact.shape);
    let one = TDim::from(1);
    let (batch, tokens) = if rank == 4 { (&shape[0], &shape[1]) } else { (&one, &shape[0]) };
    let per_key = (m[0] == one || &m[0] == batch) && m[1] == one && m[2] == one && &m[3] == tokens;
    if !per_key || model.outlet_fact(masked_out)?.shape != model.outlet_fact(scores)?.shape {
        return Ok(None);
    }
    Ok(Some(Found { inputs: [q, k, v, mask], end }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// softmax(q·kᵀ + mask)·v in f64, the plain way: [batch, tokens, heads, head_dim].
    fn reference(q: &[f32], k: &[f32], v: &[f32], mask: &[f32], dims: Dims) -> Vec<f64> {
        let Dims { batch, tokens: t, heads, head_dim: d } = dims;
        let at = |x: &[f32], b: usize, tok: usize, h: usize, i: usize| x[((b * t + tok) * heads + h) * d + i] as f64;
        let mut out = vec![0f64; q.len()];
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..t {
                    let m = |j: usize| mask[if mask.len() == t { j } else { b * t + j }] as f64;
                    let s: Vec<f64> = (0..t)
                        .map(|j| (0..d).map(|x| at(q, b, i, h, x) * at(k, b, j, h, x)).sum::<f64>() + m(j))
                        .collect();
                    let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for x in 0..d {
                        out[((b * t + i) * heads + h) * d + x] =
                            (0..t).map(|j| e[j] / sum * at(v, b, j, h, x)).sum::<f64>();
                    }
                }
            }
        }
        out
    }

    fn values(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| ((i as f32 * 0.7131 + seed).sin() * 1.7).clamp(-1.5, 1.5)).collect()
    }

    #[test]
    fn matches_a_double_precision_attention() {
        for (batch, t, heads, d, per_batch) in
            [(1, 1, 1, 1, false), (1, 5, 2, 3, false), (2, 17, 3, 8, true), (1, 9, 4, 32, false)]
        {
            let dims = Dims { batch, tokens: t, heads, head_dim: d };
            let n = batch * t * heads * d;
            let (q, k, v) = (values(n, 0.1), values(n, 1.3), values(n, 2.9));
            // the last key of each batch is padding, masked as the exporter does
            let mask: Vec<f32> = (0..if per_batch { batch * t } else { t })
                .map(|j| if t > 1 && j % t == t - 1 { -10_000.0 } else { 0.0 })
                .collect();
            let mut ours = vec![f32::NAN; n];
            attend(&q, &k, &v, &mask, dims, &mut ours);
            for (o, e) in ours.iter().zip(reference(&q, &k, &v, &mask, dims)) {
                assert!((*o as f64 - e).abs() <= 1e-5, "{o} vs {e} at {dims:?}");
            }
        }
    }

    /// The dispatched path computes what the portable body computes with the same multiply-add rounding, bit for
    /// bit: the vector width never changes a result, only whether the CPU fuses multiply-adds.
    #[test]
    fn every_cpu_path_gives_the_same_bits() {
        let dims = Dims { batch: 1, tokens: 13, heads: 3, head_dim: 32 };
        let n = 13 * 3 * 32;
        let (q, k, v) = (values(n, 0.4), values(n, 0.8), values(n, 1.9));
        let mask = vec![0f32; 13];
        #[cfg(target_arch = "x86_64")]
        let fused = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
        #[cfg(not(target_arch = "x86_64"))]
        let fused = cfg!(target_arch = "aarch64");
        let (mut dispatched, mut portable) = (vec![0f32; n], vec![0f32; n]);
        attend(&q, &k, &v, &mask, dims, &mut dispatched);
        if fused {
            attend_body::<true>(&q, &k, &v, &mask, dims, &mut portable);
        } else {
            attend_body::<false>(&q, &k, &v, &mask, dims, &mut portable);
        }
        assert!(dispatched.iter().zip(&portable).all(|(a, b)| a.to_bits() == b.to_bits()));
        // AVX-512's groups of four queries (13 = three groups and a rest of one) and a head dimension that is no
        // multiple of 4 or of 32 also give the FMA body's bits.
        #[cfg(target_arch = "x86_64")]
        if wide::available() {
            for (t, d) in [(13, 32), (6, 7), (35, 40)] {
                let dims = Dims { batch: 2, tokens: t, heads: 2, head_dim: d };
                let n = 2 * t * 2 * d;
                let (q, k, v) = (values(n, 0.3), values(n, 0.6), values(n, 1.1));
                let mask: Vec<f32> = (0..2 * t).map(|j| if j % t == t - 1 { -10_000.0 } else { 0.0 }).collect();
                let (mut wide, mut body) = (vec![0f32; n], vec![0f32; n]);
                // SAFETY: the CPU has AVX-512F, AVX2 and FMA, checked just above.
                unsafe { attend_avx512(&q, &k, &v, &mask, dims, &mut wide) };
                attend_body::<true>(&q, &k, &v, &mask, dims, &mut body);
                assert!(wide.iter().zip(&body).all(|(a, b)| a.to_bits() == b.to_bits()), "t {t}, d {d}");
            }
        }
        // and both roundings stay as close to the exact attention
        let (mut separate, exact) = (vec![0f32; n], reference(&q, &k, &v, &mask, dims));
        attend_body::<false>(&q, &k, &v, &mask, dims, &mut separate);
        for (o, e) in separate.iter().zip(&exact) {
            assert!((*o as f64 - e).abs() <= 1e-5, "{o} vs {e}");
        }
    }

    #[test]
    fn canonical_axes_ignore_the_letters() {
        let einsum = |s: &str| EinSum { axes: s.parse().unwrap(), operating_dt: f32::datum_type(), q_params: None };
        assert_eq!(canonical_axes(&einsum("ambk,anbk->abmn")), "abcd,aecd->acbe");
        assert_eq!(canonical_axes(&einsum("abmk,akbn->ambn")), "abcd,adbe->acbe");
        assert_eq!(canonical_axes(&einsum("xyzw,xvzw->xzyv")), "abcd,aecd->acbe");
        // without the batch axis (the f32 form)
        assert_eq!(canonical_axes(&einsum("mbk,nbk->abmn")), "abc,dbc->ebad");
        assert_eq!(canonical_axes(&einsum("abmk,kbn->mbn")), "abcd,dbe->cbe");
    }
}
