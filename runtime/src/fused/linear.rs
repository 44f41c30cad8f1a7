//! The int8 linear layer as one operator: the matmul on weights packed once at load, its output stage (the
//! rescale, the bias and a folded GELU) applied to the sums as they leave the kernel (from registers, or with AMX
//! from a 4 KB tile store still in L1), no i32 tensor in between.
//!
//! After [`super::quantize`] and [`super::rescale`] a linear layer of an int8 package is
//! `QuantizePerToken → EinSum (s8 × s8 → i32) → RescaleInt8`. tract then runs the matmul with its own int8 kernel:
//! it packs the activations per call (a pass of its own, [`super::pack`]), writes the i32 accumulators to a tensor,
//! and our output stage reads them back. On x86 its VNNI kernels also add 128 to every activation byte inside
//! the inner loop (`vpdpbusd` multiplies unsigned by signed bytes), which ONNX Runtime's kernels do not: the
//! matmuls were half of an early-exit run on a Zen 4 (issue 13's profile, docs/ort-side-by-side.md).
//!
//! [`Int8Linear`] replaces the `EinSum → RescaleInt8` pair where the CPU has one of our kernels. The weights are
//! packed once at load, in panels of 16 output channels whose rows are four input channels of each (64 bytes: a zmm
//! operand of `vpdpbusd`, a row of an AMX weight tile). The sums are exact integers whichever kernel computes them,
//! and leave through [`super::rescale::RescaleInt8`]'s output stage with the same f32 operations in the same order,
//! so the outputs are the unfused plan's bit for bit (the rewrite is in [`super::Fusion::EXACT`]):
//!
//! - **AMX** (Intel Xeon from Sapphire Rapids, Linux): blocks of 16 tokens × 64 channels in four accumulator tiles,
//!   each step a 16 × 64-byte tile of activations (s8 as they are: `tdpbssd` multiplies signed by signed) against
//!   four weight tiles read straight from the panels. On a Xeon with AMX (2026-12-08, `cargo bench --bench runtime --
//!   int8_linear`) 0.81–0.91 int8 TMAC/s on the layer's shapes at 16 and 64 tokens, against 0.26–0.29 for the
//!   VNNI kernel; tract's own AMX path made the layer 1.6× slower than ours.
//! - **AVX-512 VNNI** (Intel from Ice Lake, AMD from Zen 4): the activation bytes get their +128 once per row (a copy
//!   of a few KB, where tract's kernels add it inside their loop), the per-channel correction `128 · Σₖ W[k][n]` is
//!   computed at load, and a register tile of up to 12 tokens × 32 channels accumulates in 24 zmm registers.
//!
//! - **SDOT** (aarch64 with the int8 dot product: the Raspberry Pi 5's Cortex-A76): register tiles of 4 tokens × 16
//!   channels, `sdot` by element (s8 × s8) on the panels as they are, the output stage in NEON without fused
//!   multiply-adds (as the portable row on aarch64). Under qemu as a Pi 5 it takes 2 % off the instructions of a
//!   full-depth input beside tract's SDOT kernels (`scripts/pi-ratios.sh`, 2026-12-08).
//!
//! Elsewhere (the Pi 4's Cortex-A72, x86 without AVX-512 VNNI) the rewrite does not apply and tract's kernels run;
//! the op still evaluates there (a plain loop, for tests and for plans moved between machines). [`KERNEL_VAR`] picks
//! a kernel (or tract's) by hand, for measuring one against another.

use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::einsum::EinSum;

use super::rescale::RescaleInt8;

/// Output channels per packed panel: one zmm vector of 16 i32 lanes, one AMX tile's columns.
const PANEL: usize = 16;
/// Groups of four input channels per AMX tile row (64 bytes): panels are padded to whole tiles of K.
const TILE_GROUPS: usize = 16;

/// A `[k, n]` s8 weight matrix laid out for the kernels: per panel of [`PANEL`] output channels, per group of four
/// input channels, the four bytes of each channel next to each other (64 bytes: one zmm operand of `vpdpbusd`, one
/// row of an AMX B tile). Channels and input rows past the matrix's edge are zero.
#[derive(PartialEq, Eq)]
pub struct PackedWeights {
    k: usize,
    n: usize,
    /// Groups of four input channels (`⌈k / 4⌉`).
    groups: usize,
    /// `groups` rounded up to whole AMX tiles ([`TILE_GROUPS`]): the stride of a panel, in 64-byte lines.
    panel_lines: usize,
    /// `panels × panel_lines` lines.
    data: Vec<CacheLine>,
    /// Per output channel (padded to whole panels): `128 · Σₖ W[k][n]`, what the +128 on the activations of the
    /// VNNI kernel adds.
    correction: Vec<i32>,
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
        let panel_lines = groups.div_ceil(TILE_GROUPS) * TILE_GROUPS;
        let panels = n.div_ceil(PANEL);
        let mut data = vec![CacheLine([0; 64]); panels * panel_lines];
        for kk in 0..k {
            for c in 0..n {
                let line = &mut data[(c / PANEL) * panel_lines + kk / 4];
                line.0[(c % PANEL) * 4 + kk % 4] = w[kk * n + c] as u8;
            }
        }
        let mut correction = vec![0i32; panels * PANEL];
        for (c, sum) in correction.iter_mut().take(n).enumerate() {
            *sum = 128 * (0..k).map(|kk| w[kk * n + c] as i32).sum::<i32>();
        }
        Ok(Self { k, n, groups, panel_lines, data, correction })
    }

    fn panels(&self) -> usize {
        self.correction.len() / PANEL
    }

    /// The first byte of panel `p`.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn panel(&self, p: usize) -> *const u8 {
        self.data[p * self.panel_lines..].as_ptr() as *const u8
    }

    /// The activations `q` (rows of `k`) copied into `rows` rows (at least `q`'s) of the panels' padded K, the
    /// padding zero bytes (against zero weights): whole 16- and 64-byte loads for the SDOT and AMX kernels. Returns
    /// the copy and its row stride.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn padded_rows(&self, q: &[i8], rows: usize) -> (Vec<i8>, usize) {
        let stride = self.panel_lines * 4;
        let mut a = vec![0i8; rows * stride];
        for (dst, src) in a.chunks_exact_mut(stride).zip(q.chunks_exact(self.k)) {
            dst[..self.k].copy_from_slice(src);
        }
        (a, stride)
    }

    /// `W[kk][c]`, read back from the panels.
    #[cfg(test)]
    fn weight(&self, kk: usize, c: usize) -> i8 {
        self.data[(c / PANEL) * self.panel_lines + kk / 4].0[(c % PANEL) * 4 + kk % 4] as i8
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

/// Which of our kernels runs the matmul.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// AMX tiles (`tdpbssd`, s8 × s8, 16 tokens × 64 channels per step), the output stage in AVX-512: Intel Xeon
    /// from Sapphire Rapids on, on Linux (the process asks the kernel for the tile state once).
    Amx,
    /// AVX-512 VNNI (`vpdpbusd`, +128 on the activations): Intel from Ice Lake, AMD from Zen 4.
    Avx512Vnni,
    /// aarch64's int8 dot product (`sdot`, s8 × s8): the Raspberry Pi 5's Cortex-A76 and every Armv8.2+ core
    /// with it. The Pi 4's Cortex-A72 has none and keeps tract's kernels.
    NeonDot,
}

/// The environment variable that picks the kernel (`amx`, `vnni`, `sdot`) or keeps tract's matmuls (`tract`) whatever
/// the CPU: for measuring one against another. A kernel the CPU lacks is not taken.
pub const KERNEL_VAR: &str = "COSEE_INT8_KERNEL";

/// The kernel [`Int8Linear`] runs on this CPU, if any (decided once per process): on aarch64 SDOT where the CPU has
/// the dot product; on x86 AMX where the CPU and the operating system allow it, else AVX-512 VNNI. Both x86 kernels
/// need AVX-512 (F, BW) for the output stage and FMA for the GELU's polynomials ([`RescaleInt8`] uses them where
/// AVX2 and FMA exist, so that both compute the same bits).
pub fn kernel() -> Option<Kernel> {
    static KERNEL: std::sync::OnceLock<Option<Kernel>> = std::sync::OnceLock::new();
    *KERNEL.get_or_init(|| {
        let wanted = std::env::var(KERNEL_VAR).ok();
        let pick = |k: &str| wanted.as_deref().is_none_or(|w| w == k);
        let kernel = if neon_dot() {
            pick("sdot").then_some(Kernel::NeonDot)
        } else if !avx512_vnni() {
            None
        } else if pick("amx") && amx_tiles() {
            Some(Kernel::Amx)
        } else {
            pick("vnni").then_some(Kernel::Avx512Vnni)
        };
        match kernel {
            Some(kernel) => log::info!("int8 linear layers on our {kernel:?} kernel"),
            None => log::info!("int8 linear layers on tract's matmul kernels"),
        }
        kernel
    })
}

/// Whether this CPU (and OS) can run `kernel`, whether or not [`kernel`] picked it.
#[cfg(test)]
fn kernel_runs_here(kernel: Kernel) -> bool {
    match kernel {
        Kernel::NeonDot => neon_dot(),
        Kernel::Avx512Vnni => avx512_vnni(),
        Kernel::Amx => avx512_vnni() && amx_tiles(),
    }
}

/// Whether this is an aarch64 CPU with the int8 dot product (`sdot`).
fn neon_dot() -> bool {
    #[cfg(target_arch = "aarch64")]
    return std::arch::is_aarch64_feature_detected!("dotprod");
    #[cfg(not(target_arch = "aarch64"))]
    false
}

/// Whether this CPU runs one of our kernels.
pub fn kernel_available() -> bool {
    kernel().is_some()
}

fn avx512_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vnni")
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether the CPU has AMX tiles with int8 products (CPUID leaf 7: EDX bits 24 and 25) and Linux grants this
/// process the tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`; tract asks the same).
fn amx_tiles() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        let (max_leaf, leaf7) = (std::arch::x86_64::__cpuid(0).eax, std::arch::x86_64::__cpuid_count(7, 0));
        if max_leaf < 7 || leaf7.edx & (0b11 << 24) != 0b11 << 24 {
            return false;
        }
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: a plain system call with integer arguments; it only changes this process's permissions.
        unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    false
}

impl Int8Linear {
    /// The linear layer of weights `w` `[k, n]` (row-major) with the output stage `stage` (`n` channels).
    pub fn new(w: &[i8], k: usize, n: usize, stage: RescaleInt8) -> TractResult<Self> {
        ensure!(
            stage.weight_scale.len() == n && stage.bias.len() == n,
            "Int8Linear: an output stage not of {n} channels"
        );
        Ok(Self { weights: Arc::new(PackedWeights::new(w, k, n)?), stage })
    }

    /// `out` (`rows × n`) from `q` (`rows × k`) and one scale per row, on the kernel [`kernel`] picked: what the
    /// operator computes, for benchmarks and embedders.
    pub fn forward(&self, q: &[i8], scales: &[f32], out: &mut [f32]) -> TractResult<()> {
        let (k, n, rows) = (self.weights.k, self.weights.n, scales.len());
        ensure!(q.len() == rows * k && out.len() == rows * n, "Int8Linear: {rows} rows of [{k}] → [{n}] do not fit");
        self.run(q, scales, out);
        Ok(())
    }

    /// The outputs of `rows` tokens (`q` `rows × k`, `scales` one per token) into `out` (`rows × n`).
    fn run(&self, q: &[i8], scales: &[f32], out: &mut [f32]) {
        self.run_on(kernel(), q, scales, out)
    }

    /// [`Self::run`] on `kernel`, which must be one this CPU runs ([`kernel_runs_here`]).
    fn run_on(&self, kernel: Option<Kernel>, q: &[i8], scales: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        match kernel {
            // SAFETY: the caller checked that the CPU has every feature the kernel is compiled for (and, for AMX,
            // that the OS gave this process the tile state).
            Some(Kernel::Amx) => return unsafe { amx::run(&self.weights, &self.stage, q, scales, out) },
            Some(Kernel::Avx512Vnni) => return unsafe { vnni::run(&self.weights, &self.stage, q, scales, out) },
            Some(Kernel::NeonDot) | None => {}
        }
        #[cfg(target_arch = "aarch64")]
        if kernel == Some(Kernel::NeonDot) {
            // SAFETY: the caller checked that the CPU has the dot product.
            return unsafe { sdot::run(&self.weights, &self.stage, q, scales, out) };
        }
        self.run_portable(q, scales, out)
    }

    /// Row by row: the exact i32 sums from the panels, then the output stage's own row.
    fn run_portable(&self, q: &[i8], scales: &[f32], out: &mut [f32]) {
        let w = &*self.weights;
        let mut acc = vec![0i32; w.panels() * PANEL];
        for ((row, out), &scale) in q.chunks_exact(w.k).zip(out.chunks_exact_mut(w.n)).zip(scales) {
            for (panel, acc) in acc.chunks_exact_mut(PANEL).enumerate() {
                acc.iter_mut().for_each(|a| *a = 0);
                let lines = &w.data[panel * w.panel_lines..][..w.groups];
                for (x, line) in row.chunks(4).zip(lines) {
                    for (a, channel) in acc.iter_mut().zip(line.0.chunks_exact(4)) {
                        *a += x.iter().zip(channel).map(|(&x, &w)| x as i32 * w as i8 as i32).sum::<i32>();
                    }
                }
            }
            self.stage.row(&acc[..w.n], scale, out);
        }
    }
}

/// Where a register tile's outputs go, with the output stage's factors for its channels and tokens.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
struct TileOutput {
    weight_scale: *const f32,
    bias: *const f32,
    token_scale: *const f32,
    out: *mut f32,
    out_stride: usize,
    /// Output channels of the tile inside the matrix (the last panel may be partial).
    columns: usize,
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
impl TileOutput {
    /// The tile of `columns` channels from `first` and the tokens from `row` of `out` (`n` channels a token).
    fn new(
        stage: &RescaleInt8,
        scales: &[f32],
        out: &mut [f32],
        n: usize,
        row: usize,
        first: usize,
        columns: usize,
    ) -> Self {
        Self {
            weight_scale: stage.weight_scale[first..].as_ptr(),
            bias: stage.bias[first..].as_ptr(),
            token_scale: scales[row..].as_ptr(),
            out: out[row * n + first..].as_mut_ptr(),
            out_stride: n,
            columns,
        }
    }

    /// The folded GELU on the tile's first `rows` tokens, with fused multiply-adds where `FMA` (as the portable row
    /// on this CPU). Inlined into the kernel's own target features.
    #[inline(always)]
    unsafe fn gelu<const FMA: bool>(&self, rows: usize) {
        for r in 0..rows {
            for o in std::slice::from_raw_parts_mut(self.out.add(r * self.out_stride), self.columns) {
                *o = crate::fused::gelu::gelu::<FMA>(*o);
            }
        }
    }
}

/// `(first row, rows)` of the register tiles of at most `size` tokens that cover `rows`.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn row_tiles(rows: usize, size: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..rows).step_by(size).map(move |row| (row, size.min(rows - row)))
}

/// The output stage on 16 exact sums of one token, as [`RescaleInt8`] computes it (its operations in its order:
/// `((acc as f32) · w_scale) · x_scale + bias`), for both kernels.
#[cfg(target_arch = "x86_64")]
mod stage {
    use std::arch::x86_64::*;

    /// Stores the first `columns` (≤ 16) outputs of `exact` at `out`; `weight_scale` and `bias` point at the same
    /// channels.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn output16(
        exact: __m512i,
        weight_scale: *const f32,
        bias: *const f32,
        token_scale: __m512,
        out: *mut f32,
        columns: usize,
    ) {
        // Masked loads too: the scales and biases of the last panel end with the matrix.
        let mask: __mmask16 = if columns >= 16 { 0xffff } else { (1u16 << columns) - 1 };
        let y = _mm512_mul_ps(_mm512_cvtepi32_ps(exact), _mm512_maskz_loadu_ps(mask, weight_scale));
        let y = _mm512_add_ps(_mm512_mul_ps(y, token_scale), _mm512_maskz_loadu_ps(mask, bias));
        _mm512_mask_storeu_ps(out, mask, y);
    }
}

/// The AVX-512 VNNI kernel: register tiles of up to [`vnni::TILE_ROWS`] tokens × two panels.
#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::{row_tiles, stage, PackedWeights, RescaleInt8, TileOutput, PANEL};
    use std::arch::x86_64::*;

    /// Tokens per register tile: 12 × 2 accumulators, two weight vectors and a broadcast in 32 zmm registers.
    pub(super) const TILE_ROWS: usize = 12;
    /// Panels per register tile.
    const PANELS: usize = 2;

    /// See [`super::Int8Linear::run`]. The caller checks [`super::kernel`].
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
        let panels = w.panels();
        for panel in (0..panels).step_by(PANELS) {
            let pair = (panels - panel).min(PANELS);
            let first = panel * PANEL;
            let columns = (n - first).min(PANEL * PANELS);
            for (row, tile) in row_tiles(rows, TILE_ROWS) {
                let at = Tile {
                    a: a.as_ptr().add(row * stride),
                    a_stride: stride,
                    b: [w.panel(panel), w.panel(panel + pair - 1)],
                    groups,
                    correction: w.correction.as_ptr().add(first),
                    out: TileOutput::new(stage, scales, out, n, row, first, columns),
                };
                if pair == 2 {
                    tile_rows!(at, tile, 2; 1 2 3 4 5 6 7 8 9 10 11 12);
                } else {
                    tile_rows!(at, tile, 1; 1 2 3 4 5 6 7 8 9 10 11 12);
                }
                if stage.gelu {
                    at.out.gelu::<true>(tile);
                }
            }
        }
    }

    /// `at.run::<R, V>()` for `R` = `rows`, one of the listed counts.
    macro_rules! tile_rows {
        ($at:ident, $rows:expr, $v:literal; $($r:literal)*) => {
            match $rows {
                $($r => $at.run::<$r, $v>(),)*
                _ => unreachable!("a tile of {} rows", $rows),
            }
        };
    }
    use tile_rows;

    /// One register tile's operands: up to [`TILE_ROWS`] tokens against one or two panels.
    struct Tile {
        a: *const u8,
        a_stride: usize,
        b: [*const u8; PANELS],
        groups: usize,
        correction: *const i32,
        out: TileOutput,
    }

    impl Tile {
        /// `R` tokens × `V` panels: the sums in R·V registers, then the output stage on them.
        #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
        #[inline]
        unsafe fn run<const R: usize, const V: usize>(&self) {
            let mut acc = [[_mm512_setzero_si512(); V]; R];
            let mut a = self.a;
            for g in 0..self.groups {
                let w: [__m512i; V] =
                    std::array::from_fn(|j| _mm512_load_si512(self.b[j].add(64 * g) as *const __m512i));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_epi32((a.add(r * self.a_stride) as *const i32).read_unaligned());
                    for (acc, &w) in acc.iter_mut().zip(&w) {
                        *acc = _mm512_dpbusd_epi32(*acc, x, w);
                    }
                }
                a = a.add(4);
            }
            let o = &self.out;
            for (r, acc) in acc.iter().enumerate() {
                let token_scale = _mm512_set1_ps(*o.token_scale.add(r));
                for (j, &acc) in acc.iter().enumerate() {
                    let first = j * PANEL;
                    let exact = _mm512_sub_epi32(acc, _mm512_loadu_si512(self.correction.add(first) as *const __m512i));
                    stage::output16(
                        exact,
                        o.weight_scale.add(first),
                        o.bias.add(first),
                        token_scale,
                        o.out.add(r * o.out_stride + first),
                        o.columns - first,
                    );
                }
            }
        }
    }
}

/// The aarch64 kernel: register tiles of up to 4 tokens × one panel (16 channels in four 4-lane accumulators each),
/// `sdot` by element on the panels as they are; the output stage in NEON with [`RescaleInt8`]'s operations in its
/// order (no fused multiply-add: the portable row has none on aarch64), its GELU without FMA likewise.
#[cfg(target_arch = "aarch64")]
mod sdot {
    use super::{row_tiles, PackedWeights, RescaleInt8, TileOutput, PANEL};
    use std::arch::aarch64::*;
    use std::arch::asm;

    /// Tokens per register tile: 4 × 4 accumulators, 4 weight registers and 4 activation registers of 32.
    const TILE_ROWS: usize = 4;

    /// See [`super::Int8Linear::run`]. The caller checks [`super::kernel`].
    #[target_feature(enable = "neon,dotprod")]
    pub(super) unsafe fn run(w: &PackedWeights, stage: &RescaleInt8, q: &[i8], scales: &[f32], out: &mut [f32]) {
        let (k, n) = (w.k, w.n);
        let rows = scales.len();
        debug_assert!(q.len() == rows * k && out.len() == rows * n);
        let (a, stride) = w.padded_rows(q, rows);
        let quads = w.groups.div_ceil(4);
        for panel in 0..w.panels() {
            let first = panel * PANEL;
            let columns = (n - first).min(PANEL);
            for (row, tile) in row_tiles(rows, TILE_ROWS) {
                let at = Tile {
                    a: a.as_ptr().add(row * stride),
                    a_stride: stride,
                    b: w.panel(panel) as *const i8,
                    quads,
                    out: TileOutput::new(stage, scales, out, n, row, first, columns),
                };
                match tile {
                    4 => at.run::<4>(),
                    3 => at.run::<3>(),
                    2 => at.run::<2>(),
                    _ => at.run::<1>(),
                }
                if stage.gelu {
                    at.out.gelu::<false>(tile);
                }
            }
        }
    }

    /// `acc += Σ_b w[4i + b] · x[4·L + b]` per lane i: one `sdot` by element (group L of the four in `x`).
    #[inline(always)]
    unsafe fn sdot<const L: i32>(acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
        let mut acc = acc;
        asm!("sdot {acc:v}.4s, {w:v}.16b, {x:v}.4b[{l}]", acc = inout(vreg) acc, w = in(vreg) w, x = in(vreg) x,
            l = const L, options(pure, nomem, nostack, preserves_flags));
        acc
    }

    struct Tile {
        a: *const i8,
        a_stride: usize,
        b: *const i8,
        /// Groups of 16 input channels (four `sdot` groups), the rows padded to whole ones.
        quads: usize,
        out: TileOutput,
    }

    impl Tile {
        #[target_feature(enable = "neon,dotprod")]
        #[inline]
        unsafe fn run<const R: usize>(&self) {
            let mut acc = [[vdupq_n_s32(0); 4]; R];
            for quad in 0..self.quads {
                let x: [int8x16_t; R] = std::array::from_fn(|r| vld1q_s8(self.a.add(r * self.a_stride + quad * 16)));
                let group = |l: usize| self.b.add((quad * 4 + l) * 64);
                macro_rules! step {
                    ($l:literal) => {
                        let b = group($l);
                        let w = [vld1q_s8(b), vld1q_s8(b.add(16)), vld1q_s8(b.add(32)), vld1q_s8(b.add(48))];
                        for (acc, &x) in acc.iter_mut().zip(&x) {
                            for (acc, &w) in acc.iter_mut().zip(&w) {
                                *acc = sdot::<$l>(*acc, w, x);
                            }
                        }
                    };
                }
                step!(0);
                step!(1);
                step!(2);
                step!(3);
            }
            // The output stage of RescaleInt8, in its order: ((acc as f32) · w_scale) · x_scale + bias.
            let o = &self.out;
            for (r, acc) in acc.iter().enumerate() {
                let token_scale = vdupq_n_f32(*o.token_scale.add(r));
                let out = o.out.add(r * o.out_stride);
                for (j, &acc) in acc.iter().enumerate() {
                    let first = j * 4;
                    if first >= o.columns {
                        break;
                    }
                    let lanes = (o.columns - first).min(4);
                    // The last panel's scales and biases end with the matrix: its partial vectors go through copies.
                    let (mut scale, mut bias, mut y) = ([0f32; 4], [0f32; 4], [0f32; 4]);
                    let (scale, bias) = if lanes == 4 {
                        (vld1q_f32(o.weight_scale.add(first)), vld1q_f32(o.bias.add(first)))
                    } else {
                        std::ptr::copy_nonoverlapping(o.weight_scale.add(first), scale.as_mut_ptr(), lanes);
                        std::ptr::copy_nonoverlapping(o.bias.add(first), bias.as_mut_ptr(), lanes);
                        (vld1q_f32(scale.as_ptr()), vld1q_f32(bias.as_ptr()))
                    };
                    let v = vmulq_f32(vcvtq_f32_s32(acc), scale);
                    let v = vaddq_f32(vmulq_f32(v, token_scale), bias);
                    if lanes == 4 {
                        vst1q_f32(out.add(first), v);
                    } else {
                        vst1q_f32(y.as_mut_ptr(), v);
                        std::ptr::copy_nonoverlapping(y.as_ptr(), out.add(first), lanes);
                    }
                }
            }
        }
    }
}

/// The AMX kernel: per block of 16 tokens and 4 panels, four i32 tiles of 16 × 16 sums, each step a 16 × 64-byte
/// tile of activations (read in place from a copy padded to whole tiles) against four 16 × 64-byte tiles of weights
/// (the packed panels as they are); the sums then leave through the AVX-512 output stage.
#[cfg(target_arch = "x86_64")]
mod amx {
    use super::{stage, CacheLine, PackedWeights, RescaleInt8, TileOutput, PANEL, TILE_GROUPS};
    use std::arch::asm;
    use std::arch::x86_64::*;

    /// Tokens per tile (AMX's 16 rows).
    const TILE_ROWS: usize = 16;
    /// Panels per block: accumulator tiles tmm0–tmm3.
    const PANELS: usize = 4;

    /// The tile configuration (palette 1): every tile 16 rows of 64 bytes. tmm0–3 accumulate, tmm4 holds the
    /// activations, tmm5–7 the weights.
    fn config() -> CacheLine {
        let mut cfg = [0u8; 64];
        cfg[0] = 1;
        for tile in 0..8 {
            cfg[16 + 2 * tile] = 64; // bytes per row (u16, little-endian)
            cfg[48 + tile] = 16; // rows
        }
        CacheLine(cfg)
    }

    /// See [`super::Int8Linear::run`]. The caller checks [`super::kernel`].
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    pub(super) unsafe fn run(w: &PackedWeights, stage: &RescaleInt8, q: &[i8], scales: &[f32], out: &mut [f32]) {
        let (k, n) = (w.k, w.n);
        let rows = scales.len();
        debug_assert!(q.len() == rows * k && out.len() == rows * n);
        // The rows padded to whole tiles of 16 tokens as well.
        let blocks = rows.div_ceil(TILE_ROWS);
        let (a, stride) = w.padded_rows(q, blocks * TILE_ROWS);
        let steps = w.panel_lines / TILE_GROUPS;
        let mut sums = [[0i32; TILE_ROWS * PANEL]; PANELS];
        let cfg = config();
        asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
        let panels = w.panels();
        for block in 0..blocks {
            let tokens = (rows - block * TILE_ROWS).min(TILE_ROWS);
            for panel in (0..panels).step_by(PANELS) {
                let count = (panels - panel).min(PANELS);
                asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
                for step in 0..steps {
                    let x = a.as_ptr().add(block * TILE_ROWS * stride + step * 64);
                    asm!("tileloadd tmm4, [{x} + {s}*1]", x = in(reg) x, s = in(reg) stride, options(nostack, readonly));
                    let b = |j: usize| w.panel(panel + j).add(step * TILE_GROUPS * 64);
                    asm!("tileloadd tmm5, [{b} + {s}*1]", "tdpbssd tmm0, tmm4, tmm5", b = in(reg) b(0), s = in(reg) 64usize,
                        options(nostack, readonly));
                    if count > 1 {
                        asm!("tileloadd tmm6, [{b} + {s}*1]", "tdpbssd tmm1, tmm4, tmm6", b = in(reg) b(1),
                            s = in(reg) 64usize, options(nostack, readonly));
                    }
                    if count > 2 {
                        asm!("tileloadd tmm7, [{b} + {s}*1]", "tdpbssd tmm2, tmm4, tmm7", b = in(reg) b(2),
                            s = in(reg) 64usize, options(nostack, readonly));
                    }
                    if count > 3 {
                        asm!("tileloadd tmm5, [{b} + {s}*1]", "tdpbssd tmm3, tmm4, tmm5", b = in(reg) b(3),
                            s = in(reg) 64usize, options(nostack, readonly));
                    }
                }
                let s = PANEL * 4;
                asm!("tilestored [{c} + {s}*1], tmm0", c = in(reg) sums[0].as_mut_ptr(), s = in(reg) s, options(nostack));
                asm!("tilestored [{c} + {s}*1], tmm1", c = in(reg) sums[1].as_mut_ptr(), s = in(reg) s, options(nostack));
                asm!("tilestored [{c} + {s}*1], tmm2", c = in(reg) sums[2].as_mut_ptr(), s = in(reg) s, options(nostack));
                asm!("tilestored [{c} + {s}*1], tmm3", c = in(reg) sums[3].as_mut_ptr(), s = in(reg) s, options(nostack));
                let first = panel * PANEL;
                let columns = (n - first).min(PANEL * count);
                for r in 0..tokens {
                    let row = block * TILE_ROWS + r;
                    let token_scale = _mm512_set1_ps(scales[row]);
                    for (j, sums) in sums.iter().enumerate().take(count) {
                        let at = first + j * PANEL;
                        stage::output16(
                            _mm512_loadu_si512(sums[r * PANEL..].as_ptr() as *const __m512i),
                            stage.weight_scale.as_ptr().add(at),
                            stage.bias.as_ptr().add(at),
                            token_scale,
                            out.as_mut_ptr().add(row * n + at),
                            columns - j * PANEL,
                        );
                    }
                }
                if stage.gelu {
                    TileOutput::new(stage, scales, out, n, block * TILE_ROWS, first, columns).gelu::<true>(tokens);
                }
            }
        }
        asm!("tilerelease", options(nostack, nomem));
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
        if let Some(last) = shape.last_mut() {
            *last = n;
        }
        let out = super::tensor_filled(&shape, |out| self.run(q, scales, out))?;
        Ok(tvec!(out.into_tvalue()))
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
    super::replace_all(model, "int8_linear", matched)
}

/// `RescaleInt8(EinSum(q, W), x_scale)` at node `stage`: [`Int8Linear`] on `[q, x_scale]` in its place.
fn matched(model: &TypedModel, stage: usize) -> TractResult<Option<super::Replacement<Int8Linear>>> {
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
    Ok(Some(super::Replacement {
        named_after: stage,
        inputs: tvec![q, token_scale],
        op: Int8Linear { weights, stage: rescale.clone() },
        replaces: tvec![stage.into()],
    }))
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

    /// The test weights, `W[kk][c]` of a `[k, n]` matrix.
    fn weight(kk: usize, c: usize) -> i8 {
        s8(kk * 7919 + c * 31 + 7)
    }

    fn op(k: usize, n: usize, gelu: bool) -> Int8Linear {
        let w: Vec<i8> = (0..k * n).map(|i| weight(i / n, i % n)).collect();
        let weight_scale = (0..n).map(|c| 1e-3 * (1.0 + (c % 7) as f32)).collect();
        let bias = (0..n).map(|c| (c as f32 - 9.0) * 0.01).collect();
        Int8Linear {
            weights: Arc::new(PackedWeights::new(&w, k, n).unwrap()),
            stage: RescaleInt8 { weight_scale, bias, gelu },
        }
    }

    /// Every kernel this CPU runs (and the portable loop) against the sums by hand and the output stage's own
    /// row, bit for bit, across tile and panel edges: tokens 1…33 (VNNI tiles of 12, AMX tiles of 16, and their
    /// rests), input channels not a multiple of four or of 64, output channels not a multiple of 16 or 64; the
    /// extreme activations -128 and 127 included.
    #[test]
    fn every_kernel_equals_the_sums_and_the_output_stage_bit_for_bit() {
        let kernels: Vec<Option<Kernel>> = [None, Some(Kernel::Avx512Vnni), Some(Kernel::Amx), Some(Kernel::NeonDot)]
            .into_iter()
            .filter(|k| k.is_none_or(kernel_runs_here))
            .collect();
        println!("kernels: {kernels:?}");
        for kernel in kernels {
            check_kernel(kernel);
        }
    }

    fn check_kernel(kernel: Option<Kernel>) {
        for (k, n) in [(4, 16), (7, 20), (384, 64), (384, 130), (1536, 64), (33, 200), (100, 48)] {
            for gelu in [false, true] {
                let op = op(k, n, gelu);
                for rows in [1, 2, 5, 12, 13, 16, 17, 33] {
                    let mut q: Vec<i8> = (0..rows * k).map(|i| s8(i * 17 + 3)).collect();
                    q[0] = -128;
                    q[rows * k - 1] = 127;
                    let scales: Vec<f32> = (0..rows).map(|r| 0.01 + r as f32 * 1e-3).collect();
                    let mut out = vec![0f32; rows * n];
                    op.run_on(kernel, &q, &scales, &mut out);
                    for r in 0..rows {
                        let acc: Vec<i32> = (0..n)
                            .map(|c| (0..k).map(|kk| q[r * k + kk] as i32 * weight(kk, c) as i32).sum())
                            .collect();
                        let mut expected = vec![0f32; n];
                        op.stage.row(&acc, scales[r], &mut expected);
                        for c in 0..n {
                            assert_eq!(
                                out[r * n + c].to_bits(),
                                expected[c].to_bits(),
                                "{kernel:?}: k {k}, n {n}, gelu {gelu}, row {r} of {rows}, channel {c}: {} vs {}",
                                out[r * n + c],
                                expected[c]
                            );
                        }
                    }
                }
            }
        }
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
    fn packing_keeps_every_weight_and_pads_with_zeros() {
        let (k, n) = (9, 20);
        let w: Vec<i8> = (0..k * n).map(|i| weight(i / n, i % n)).collect();
        let packed = PackedWeights::new(&w, k, n).unwrap();
        for kk in 0..k {
            for c in 0..n {
                assert_eq!(packed.weight(kk, c), w[kk * n + c]);
            }
        }
        assert_eq!(packed.panel_lines, TILE_GROUPS);
        for (kk, c) in [(9, 0), (11, 3), (4 * TILE_GROUPS - 1, 19), (0, 31), (8, 25)] {
            assert_eq!(packed.weight(kk, c), 0, "({kk}, {c})");
        }
        let sums: Vec<i32> = (0..n).map(|c| 128 * (0..k).map(|kk| w[kk * n + c] as i32).sum::<i32>()).collect();
        assert_eq!(packed.correction[..n], sums);
        assert!(packed.correction[n..].iter().all(|&c| c == 0));
    }

    #[test]
    fn packing_refuses_a_wrong_size() {
        assert!(PackedWeights::new(&[0; 5], 2, 3).is_err());
        assert!(PackedWeights::new(&[], 0, 3).is_err());
    }
}
