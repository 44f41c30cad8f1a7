//! The int8 linear layer as one operator: the matmul on weights packed once at load, its output stage (the
//! rescale, the bias and a folded GELU) applied to the accumulators while they are still in registers.
//!
//! After [`super::quantize`] and [`super::rescale`] a linear layer of an int8 package is
//! `QuantizePerToken → EinSum (s8 × s8 → i32) → RescaleInt8`. tract then runs the matmul with its own int8 kernel:
//! it packs the activations per call (a pass of its own, [`super::pack`]), writes the i32 accumulators to a tensor,
//! and our output stage reads them back. On x86 its VNNI kernels also add 128 to every activation byte inside
//! the inner loop (`vpdpbusd` multiplies unsigned by signed bytes), which ONNX Runtime's kernels do not: the
//! matmuls were half of an early-exit run on a Zen 4 (issue 13's profile, docs/ort-side-by-side.md).
//!
//! [`Int8Linear`] replaces the `EinSum → RescaleInt8` pair where the CPU has AVX-512 VNNI. The activation bytes
//! get their +128 once per row (a copy of a few KB); the weights are packed at load in panels of 64 output channels,
//! four input channels per 32-bit lane, with the per-channel correction `128 · Σₖ W[k][n]` computed once; a tile of
//! up to 6 tokens × 64 channels accumulates in 24 zmm registers and leaves through the output stage of
//! [`super::rescale::RescaleInt8`] with the same f32 operations in the same order. The integer sums are exact, so
//! the outputs are the unfused plan's bit for bit (the rewrite is in [`super::Fusion::EXACT`]).
//!
//! Elsewhere (aarch64, x86 without AVX-512 VNNI) the rewrite does not apply and tract's kernels run; the op
//! still evaluates there (a plain loop, for tests and for plans moved between machines).

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::einsum::EinSum;

use super::rescale::RescaleInt8;

/// Output channels per packed panel: four zmm vectors of 16 i32 lanes.
const PANEL: usize = 64;
/// Tokens per register tile: 6 × 4 accumulators, 4 weight vectors and a broadcast in 32 zmm registers.
const TILE_ROWS: usize = 6;

/// A `[k, n]` s8 weight matrix laid out for the kernel: per panel of [`PANEL`] output channels, per group of four
/// input channels, the four bytes of each channel next to each other (`vpdpbusd`'s operand layout). Channels and
/// input rows past the matrix's edge are zero.
#[derive(PartialEq, Eq)]
pub struct PackedWeights {
    k: usize,
    n: usize,
    /// Groups of four input channels (`⌈k / 4⌉`).
    groups: usize,
    /// `panels × groups × PANEL × 4` bytes, 64-byte aligned.
    data: Vec<CacheLine>,
    /// Per output channel (padded to whole panels): `128 · Σₖ W[k][n]`, what the +128 on the activations adds.
    correction: Vec<i32>,
    /// The weights as given (`[k, n]`, row-major), for the portable loop.
    plain: Vec<i8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(64))]
struct CacheLine([u8; 64]);

/// The shape only: a plan's dump would otherwise print every weight.
impl std::fmt::Debug for PackedWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedWeights([{}, {}] s8)", self.k, self.n)
    }
}

impl PackedWeights {
    /// Packs `w` `[k, n]` (row-major).
    pub fn new(w: &[i8], k: usize, n: usize) -> TractResult<Self> {
        ensure!(w.len() == k * n && k > 0 && n > 0, "Int8Linear: {} weights for [{k}, {n}]", w.len());
        let groups = k.div_ceil(4);
        let panels = n.div_ceil(PANEL);
        let bytes_per_panel = groups * PANEL * 4;
        let mut bytes = vec![0u8; panels * bytes_per_panel];
        for kk in 0..k {
            for c in 0..n {
                let (panel, lane) = (c / PANEL, c % PANEL);
                bytes[panel * bytes_per_panel + (kk / 4) * PANEL * 4 + lane * 4 + kk % 4] = w[kk * n + c] as u8;
            }
        }
        let data = bytes.chunks_exact(64).map(|line| CacheLine(line.try_into().expect("64-byte chunks"))).collect();
        let mut correction = vec![0i32; panels * PANEL];
        for (c, sum) in correction.iter_mut().take(n).enumerate() {
            *sum = 128 * (0..k).map(|kk| w[kk * n + c] as i32).sum::<i32>();
        }
        Ok(Self { k, n, groups, data, correction, plain: w.to_vec() })
    }

    fn panels(&self) -> usize {
        self.correction.len() / PANEL
    }
}

/// `y = RescaleInt8(q · W, x_scale)`: `q` `[.., tokens, k]` s8, `x_scale` `[.., tokens, 1]` f32, `y` `[.., tokens, n]`.
#[derive(Debug, Clone)]
pub struct Int8Linear {
    pub weights: Arc<PackedWeights>,
    /// The output stage, per output channel: weight scale, bias, and whether a GELU follows.
    pub stage: RescaleInt8,
}

impl PartialEq for Int8Linear {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.weights, &other.weights) && self.stage == other.stage
    }
}

impl Eq for Int8Linear {}

/// Whether this CPU has the kernel: AVX-512 (F, BW) with VNNI, and FMA for the GELU's polynomials (as
/// [`RescaleInt8`] uses them where AVX2 and FMA exist, so that both stages compute the same bits).
pub fn kernel_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vnni")
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

impl Int8Linear {
    /// The outputs of `rows` tokens (`q` `rows × k`, `scales` one per token) into `out` (`rows × n`).
    fn run(&self, q: &[i8], scales: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if kernel_available() {
            // SAFETY: the CPU has every feature the kernel is compiled for, checked just above.
            return unsafe { avx512::run(&self.weights, &self.stage, q, scales, out) };
        }
        self.run_portable(q, scales, out)
    }

    /// Row by row: the exact i32 sums, then the output stage's own row.
    fn run_portable(&self, q: &[i8], scales: &[f32], out: &mut [f32]) {
        let PackedWeights { k, n, ref plain, .. } = *self.weights;
        let mut acc = vec![0i32; n];
        for ((row, out), &scale) in q.chunks_exact(k).zip(out.chunks_exact_mut(n)).zip(scales) {
            acc.iter_mut().for_each(|a| *a = 0);
            for (&x, w) in row.iter().zip(plain.chunks_exact(n)) {
                for (a, &w) in acc.iter_mut().zip(w) {
                    *a += x as i32 * w as i32;
                }
            }
            self.stage.row(&acc, scale, out);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{PackedWeights, RescaleInt8, PANEL, TILE_ROWS};
    use std::arch::x86_64::*;

    /// See [`super::Int8Linear::run`]. The caller checks [`super::kernel_available`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma")]
    pub(super) unsafe fn run(w: &PackedWeights, stage: &RescaleInt8, q: &[i8], scales: &[f32], out: &mut [f32]) {
        let (k, n, groups) = (w.k, w.n, w.groups);
        let rows = scales.len();
        debug_assert!(q.len() == rows * k && out.len() == rows * n);
        // The activations as u8 (+128, i.e. the sign bit flipped), each row padded to whole groups of four with
        // bytes whose weights are zero.
        let stride = groups * 4;
        let mut a = vec![0u8; rows * stride];
        for (dst, src) in a.chunks_exact_mut(stride).zip(q.chunks_exact(k)) {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = s as u8 ^ 0x80;
            }
        }
        let panel_lines = groups * 4;
        for panel in 0..w.panels() {
            let b = w.data.as_ptr().add(panel * panel_lines) as *const u8;
            let first = panel * PANEL;
            let columns = (n - first).min(PANEL);
            let mut row = 0;
            while row < rows {
                let tile = (rows - row).min(TILE_ROWS);
                let at = Tile {
                    a: a.as_ptr().add(row * stride),
                    a_stride: stride,
                    b,
                    groups,
                    correction: w.correction.as_ptr().add(first),
                    weight_scale: stage.weight_scale.as_ptr().add(first),
                    bias: stage.bias.as_ptr().add(first),
                    token_scale: scales.as_ptr().add(row),
                    out: out.as_mut_ptr().add(row * n + first),
                    out_stride: n,
                    columns,
                };
                match tile {
                    6 => at.run::<6>(),
                    5 => at.run::<5>(),
                    4 => at.run::<4>(),
                    3 => at.run::<3>(),
                    2 => at.run::<2>(),
                    _ => at.run::<1>(),
                }
                if stage.gelu {
                    for r in row..row + tile {
                        for o in &mut out[r * n + first..r * n + first + columns] {
                            *o = crate::fused::gelu::gelu::<true>(*o);
                        }
                    }
                }
                row += tile;
            }
        }
    }

    /// One register tile's operands: up to [`TILE_ROWS`] tokens against one panel.
    struct Tile {
        a: *const u8,
        a_stride: usize,
        b: *const u8,
        groups: usize,
        correction: *const i32,
        weight_scale: *const f32,
        bias: *const f32,
        token_scale: *const f32,
        out: *mut f32,
        out_stride: usize,
        /// Output channels of this panel inside the matrix (the last panel may be partial).
        columns: usize,
    }

    impl Tile {
        /// `R` tokens × 64 channels: the sums in 4·R registers, then the output stage on them. Stores only the
        /// `columns` channels that exist.
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
        #[inline]
        unsafe fn run<const R: usize>(&self) {
            let mut acc = [[_mm512_setzero_si512(); 4]; R];
            let mut b = self.b;
            let mut a = self.a;
            for _ in 0..self.groups {
                let w = [
                    _mm512_load_si512(b as *const __m512i),
                    _mm512_load_si512(b.add(64) as *const __m512i),
                    _mm512_load_si512(b.add(128) as *const __m512i),
                    _mm512_load_si512(b.add(192) as *const __m512i),
                ];
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_epi32((a.add(r * self.a_stride) as *const i32).read_unaligned());
                    for (acc, &w) in acc.iter_mut().zip(&w) {
                        *acc = _mm512_dpbusd_epi32(*acc, x, w);
                    }
                }
                b = b.add(PANEL * 4);
                a = a.add(4);
            }
            // The output stage of RescaleInt8, in its order: ((acc as f32) · w_scale) · x_scale + bias.
            for (r, acc) in acc.iter().enumerate() {
                let token_scale = _mm512_set1_ps(*self.token_scale.add(r));
                let out = self.out.add(r * self.out_stride);
                for (j, &acc) in acc.iter().enumerate() {
                    let first = j * 16;
                    if first >= self.columns {
                        break;
                    }
                    let left = self.columns - first;
                    let mask: __mmask16 = if left >= 16 { 0xffff } else { (1u16 << left) - 1 };
                    let exact = _mm512_sub_epi32(acc, _mm512_loadu_si512(self.correction.add(first) as *const __m512i));
                    let y = _mm512_mul_ps(_mm512_cvtepi32_ps(exact), _mm512_loadu_ps(self.weight_scale.add(first)));
                    let y = _mm512_add_ps(_mm512_mul_ps(y, token_scale), _mm512_loadu_ps(self.bias.add(first)));
                    _mm512_mask_storeu_ps(out.add(first), mask, y);
                }
            }
        }
    }
}

impl Op for Int8Linear {
    fn name(&self) -> StaticName {
        if self.stage.gelu { "Int8Linear+Gelu" } else { "Int8Linear" }.into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("[{}, {}] s8", self.weights.k, self.weights.n)])
    }

    op_as_typed_op!();
}

impl EvalOp for Int8Linear {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (q, scales) = args_2!(inputs);
        let (k, n) = (self.weights.k, self.weights.n);
        let mut shape: TVec<usize> = q.shape().into();
        ensure!(shape.last() == Some(&k), "Int8Linear: input {shape:?} for {k} input channels");
        let q = q.try_as_plain_ram()?;
        let q = q.as_slice::<i8>()?;
        let scales = scales.try_as_plain_ram()?;
        let scales = scales.as_slice::<f32>()?;
        ensure!(scales.len() * k == q.len(), "Int8Linear: {} token scales for {shape:?}", scales.len());
        let mut out = vec![0f32; scales.len() * n];
        self.run(q, scales, &mut out);
        if let Some(last) = shape.last_mut() {
            *last = n;
        }
        Ok(tvec!(tract_ndarray::ArrayD::from_shape_vec(&*shape, out)?.into_tvalue()))
    }
}

impl TypedOp for Int8Linear {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs[0].datum_type == i8::datum_type(), "Int8Linear takes s8 activations");
        ensure!(inputs[1].datum_type == f32::datum_type(), "Int8Linear takes f32 token scales");
        let mut shape: TVec<TDim> = inputs[0].shape.to_tvec();
        if let Some(last) = shape.last_mut() {
            *last = self.weights.n.to_dim();
        }
        Ok(tvec!(f32::fact(shape)))
    }
}

/// Replaces every `EinSum (s8 activations × constant s8 weights) → RescaleInt8` of the decluttered `model` by one
/// [`Int8Linear`] where the CPU has the kernel (elsewhere tract's kernels are the faster); returns how many. Run
/// after [`super::rescale::fuse`] and [`super::gelu::fuse`].
pub fn fuse(model: &mut TypedModel) -> TractResult<usize> {
    if !kernel_available() {
        return Ok(0);
    }
    let found = super::occurrences(model, matched)?;
    if found.is_empty() {
        return Ok(0);
    }
    let mut patch = TypedModelPatch::new("fuse the int8 linear layer");
    for f in &found {
        let inputs = [patch.tap_model(model, f.q)?, patch.tap_model(model, f.token_scale)?];
        let name = format!("{}.int8_linear", model.node(f.stage).name);
        let out = patch.wire_node(name, f.op.clone(), &inputs)?;
        patch.shunt_outside(model, f.stage.into(), out[0])?;
    }
    patch.apply(model)?;
    model.compact()?;
    Ok(found.len())
}

/// One occurrence: the output stage whose output the op takes over, the op's inputs, the op.
struct Found {
    stage: usize,
    q: OutletId,
    token_scale: OutletId,
    op: Int8Linear,
}

/// `RescaleInt8(EinSum(q, W), x_scale)` at node `stage`.
fn matched(model: &TypedModel, stage: usize) -> TractResult<Option<Found>> {
    let node = model.node(stage);
    let Some(rescale) = node.op_as::<RescaleInt8>() else { return Ok(None) };
    let &[acc, token_scale] = node.inputs.as_slice() else { return Ok(None) };
    if !super::used_once(model, acc) {
        return Ok(None);
    }
    let Some((q, weights)) = int8_matmul(model, acc.node)? else { return Ok(None) };
    if rescale.bias.len() != weights.n || rescale.weight_scale.len() != weights.n {
        return Ok(None);
    }
    let weights = Arc::new(weights);
    Ok(Some(Found { stage, q, token_scale, op: Int8Linear { weights, stage: rescale.clone() } }))
}

/// Node `node` as `q · W`: an i32 `EinSum` of s8 activations `q` `[.., m, k]` and constant s8 weights `W`
/// `[1.., k, n]` (leading axes of size 1), with no quantization parameters beyond zero points 0 and scales 1.
/// Returns `q` and W packed.
fn int8_matmul(model: &TypedModel, node: usize) -> TractResult<Option<(OutletId, PackedWeights)>> {
    let node = model.node(node);
    let Some(einsum) = node.op_as::<EinSum>() else { return Ok(None) };
    if einsum.operating_dt != i32::datum_type() || node.outputs[0].fact.datum_type != i32::datum_type() {
        return Ok(None);
    }
    let trivial_parameters = match (einsum.q_params, node.inputs.len()) {
        (None, 2) => true,
        // bias, a0, a_scale, b0, b_scale, c0, c_scale: a plain integer matmul has 0, 0, 1, 0, 1, 0, 1.
        (Some(dt), 9) if dt == i32::datum_type() => {
            let mut trivial = true;
            for (input, expected) in node.inputs[2..].iter().zip([0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]) {
                trivial &= match &model.outlet_fact(*input)?.konst {
                    Some(k) if k.len() == 1 => k.cast_to_scalar::<f64>()? == expected,
                    _ => false,
                };
            }
            trivial
        }
        _ => false,
    };
    if !trivial_parameters {
        return Ok(None);
    }
    let (q, w) = (node.inputs[0], node.inputs[1]);
    let (q_fact, w_fact) = (model.outlet_fact(q)?, model.outlet_fact(w)?);
    let Some(w_value) = &w_fact.konst else { return Ok(None) };
    if q_fact.datum_type != i8::datum_type() || w_value.datum_type() != i8::datum_type() {
        return Ok(None);
    }
    let (rq, rw) = (q_fact.rank(), w_value.rank());
    if rq < 2 || rw < 2 || node.outputs[0].fact.rank() != rq {
        return Ok(None);
    }
    let (k, n) = (w_value.shape()[rw - 2], w_value.shape()[rw - 1]);
    if w_value.shape()[..rw - 2].iter().any(|&d| d != 1) || q_fact.shape[rq - 1] != k.to_dim() {
        return Ok(None);
    }
    if !is_matmul(&einsum.axes, rq, rw)? {
        return Ok(None);
    }
    let packed = PackedWeights::new(w_value.try_as_plain_ram()?.as_slice::<i8>()?, k, n)?;
    Ok(Some((q, packed)))
}

/// Whether `axes` maps `q` (rank `rq`) and `W` (rank `rw`) to `q · W`: q's last axis is W's second to last and
/// summed; W's last axis is the output's last; every other axis of q is the output's at the same place (W may
/// carry it as a unit axis, or the unit axes of W are its own).
fn is_matmul(axes: &AxesMapping, rq: usize, rw: usize) -> TractResult<bool> {
    use tract_onnx::tract_core::axes::Axis;
    let positions = |axis: &Axis| (axis.inputs[0].to_vec(), axis.inputs[1].to_vec(), axis.outputs[0].to_vec());
    let k = positions(axes.axis((InOut::In(0), rq - 1))?);
    if k != (vec![rq - 1], vec![rw - 2], vec![]) {
        return Ok(false);
    }
    let n = positions(axes.axis((InOut::In(1), rw - 1))?);
    if n != (vec![], vec![rw - 1], vec![rq - 1]) {
        return Ok(false);
    }
    for p in 0..rq - 1 {
        let (in_q, _, out) = positions(axes.axis((InOut::In(0), p))?);
        if in_q != [p] || out != [p] {
            return Ok(false);
        }
    }
    // W's leading axes have size 1: whether they are q's batch axes or their own, they change nothing.
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random s8 in [-127, 127] (the exporter's weights are symmetric).
    fn s8(seed: usize) -> i8 {
        ((seed.wrapping_mul(2_654_435_761) >> 7) % 255) as i8 - 127
    }

    fn op(k: usize, n: usize, gelu: bool) -> Int8Linear {
        let w: Vec<i8> = (0..k * n).map(|i| s8(i * 31 + 7)).collect();
        let weight_scale = (0..n).map(|c| 1e-3 * (1.0 + (c % 7) as f32)).collect();
        let bias = (0..n).map(|c| (c as f32 - 9.0) * 0.01).collect();
        Int8Linear {
            weights: Arc::new(PackedWeights::new(&w, k, n).unwrap()),
            stage: RescaleInt8 { weight_scale, bias, gelu },
        }
    }

    /// The dispatched kernel (AVX-512 VNNI where the CPU has it) against the sums by hand and the output stage's
    /// own row, bit for bit, across tile and panel edges: tokens 1…13 (tiles of 6 and their rest), input channels
    /// not a multiple of four, output channels not a multiple of 64; the extreme activations -128 and 127 included.
    #[test]
    fn the_kernel_equals_the_sums_and_the_output_stage_bit_for_bit() {
        for (k, n) in [(4, 16), (7, 20), (384, 64), (384, 130), (1536, 64), (33, 200)] {
            for gelu in [false, true] {
                let op = op(k, n, gelu);
                for rows in [1, 2, 5, 6, 7, 12, 13] {
                    let mut q: Vec<i8> = (0..rows * k).map(|i| s8(i * 17 + 3)).collect();
                    q[0] = -128;
                    q[rows * k - 1] = 127;
                    let scales: Vec<f32> = (0..rows).map(|r| 0.01 + r as f32 * 1e-3).collect();
                    let mut out = vec![0f32; rows * n];
                    op.run(&q, &scales, &mut out);
                    let w = &op.weights.plain;
                    for r in 0..rows {
                        let acc: Vec<i32> = (0..n)
                            .map(|c| (0..k).map(|kk| q[r * k + kk] as i32 * w[kk * n + c] as i32).sum())
                            .collect();
                        let mut expected = vec![0f32; n];
                        op.stage.row(&acc, scales[r], &mut expected);
                        for c in 0..n {
                            assert_eq!(
                                out[r * n + c].to_bits(),
                                expected[c].to_bits(),
                                "k {k}, n {n}, gelu {gelu}, row {r} of {rows}, channel {c}: {} vs {}",
                                out[r * n + c],
                                expected[c]
                            );
                        }
                    }
                    let mut portable = vec![0f32; rows * n];
                    op.run_portable(&q, &scales, &mut portable);
                    assert_eq!(portable, out);
                }
            }
        }
        println!("kernel available: {}", kernel_available());
    }

    /// Only `q · W` is a linear layer: a transposed W, a summed batch axis or an output in another order is not.
    #[test]
    fn only_the_plain_matmul_axes_match() {
        let axes = |s: &str| s.parse::<AxesMapping>().unwrap();
        assert!(is_matmul(&axes("amk,akn->amn"), 3, 3).unwrap());
        assert!(is_matmul(&axes("amk,kn->amn"), 3, 2).unwrap());
        assert!(is_matmul(&axes("mk,kn->mn"), 2, 2).unwrap());
        assert!(is_matmul(&axes("amk,bkn->amn"), 3, 3).unwrap());
        assert!(!is_matmul(&axes("amk,ank->amn"), 3, 3).unwrap());
        assert!(!is_matmul(&axes("amk,akn->anm"), 3, 3).unwrap());
        assert!(!is_matmul(&axes("amk,akn->mn"), 3, 3).unwrap());
        assert!(!is_matmul(&axes("mak,akn->amn"), 3, 3).unwrap());
    }

    #[test]
    fn packing_refuses_a_wrong_size() {
        assert!(PackedWeights::new(&[0; 5], 2, 3).is_err());
        assert!(PackedWeights::new(&[], 0, 3).is_err());
    }
}
