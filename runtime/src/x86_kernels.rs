//! Steering tract away from an int8 kernel that some x86 machines run 15× slower than its 128-bit sibling.
//!
//! tract-linalg 0.23.9's AVX2 int8 matmul kernel (`avx2_mmm_i32_8x8`) loads each 8 bytes of its left operand with a
//! legacy-SSE `movq` inside a loop of 256-bit VEX instructions. Where the processor (or the hypervisor under it)
//! charges an SSE/AVX state transition for that mix, every iteration pays it. On the AMD EPYC (Zen 3, KVM) machines
//! this project was measured on in December 2026, a legacy `movq` after a dirty 256-bit register cost about 117 ns
//! against 1 ns for its VEX form, and an int8 layer of the shipped package took 72 ms at 16 tokens instead of 4.9 ms
//! with tract's AVX (128-bit, VEX) kernel. On the Intel machines measured before, the mix costs nothing visible.
//!
//! So before tract probes the instruction set (once per process, at its first plan), [`steer_tract_kernels`] times
//! that very instruction pattern for about a millisecond and, where it is slow, takes AVX2 out of the set tract
//! picks kernels from (its `TRACT_CPU_ISA` knob, `-avx2`), leaving FMA and AVX. A `TRACT_CPU_ISA` set in the
//! environment always wins: the user has decided.
//!
//! The same function picks tract's wider AVX-512 VNNI int8 kernel on AMD processors. tract chooses between its ymm
//! `avx512vnni_mmm_i32_8x8` and zmm `avx512vnni_mmm_i32_16x16` by probing how many 512-bit FMA units the core has,
//! and takes 8×8 on a core with one (it measured 16×16 4–11 % slower on an Intel client part). AMD's Zen 4 has one,
//! double-pumped, and there the 16×16 kernel was the faster on our layer: one int8 layer of the shipped package
//! against ONNX Runtime's in the same process, three alternating rounds (`examples/fusion.rs --ort`, 2026-12-07, EPYC
//! family 25 model 17), 1.24–1.33× ORT's at 16 tokens and 1.30–1.35× at 64 with 16×16, against 1.38–1.58× and
//! 1.43–1.49× with 8×8. Zen 5 gets 16×16 from tract's own probe. So on AMD with AVX-512 VNNI the runtime sets
//! tract's `TRACT_AVX512_FMA_UNITS` knob to 2, unless the environment sets it.

use std::sync::Once;

/// The knob tract reads its instruction-set edits from.
const ISA_KNOB: &str = "TRACT_CPU_ISA";

/// Checks once per process, before the first tract plan, whether this CPU penalizes legacy SSE after 256-bit AVX,
/// and if so has tract plan without its AVX2 kernels. Cheap to call again.
pub fn steer_tract_kernels() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os(ISA_KNOB).is_some() {
            return;
        }
        if let Some(penalty) = sse_after_avx_penalty() {
            log::info!(
                "legacy SSE after 256-bit AVX costs {:.0} ns here ({:.1}× its VEX form): planning without tract's \
                 AVX2 int8 kernel ({ISA_KNOB}=-avx2)",
                penalty.legacy_ns,
                penalty.ratio()
            );
            if let Err(e) = tract_onnx::tract_core::knobs::set_config_global(ISA_KNOB, "-avx2") {
                log::warn!("could not steer tract's kernels: {e:#}");
            }
        }
        if std::env::var_os(FMA_UNITS_KNOB).is_none() && amd_with_avx512_vnni() {
            log::info!("AMD with AVX-512 VNNI: tract's 16x16 int8 kernel ({FMA_UNITS_KNOB}=2)");
            if let Err(e) = tract_onnx::tract_core::knobs::set_config_global(FMA_UNITS_KNOB, "2") {
                log::warn!("could not steer tract's kernels: {e:#}");
            }
        }
    });
}

/// The knob that tells tract how many 512-bit FMA units to assume (2: its zmm 16×16 VNNI int8 kernel).
const FMA_UNITS_KNOB: &str = "TRACT_AVX512_FMA_UNITS";

/// Whether this is an AMD processor with AVX-512 VNNI (Zen 4 and later).
#[cfg(target_arch = "x86_64")]
fn amd_with_avx512_vnni() -> bool {
    // SAFETY: CPUID leaf 0 exists on every x86-64 processor; it only reads identification registers.
    #[allow(unused_unsafe)]
    let leaf0 = unsafe { std::arch::x86_64::__cpuid(0) };
    is_amd_vendor(leaf0.ebx, leaf0.edx, leaf0.ecx)
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vnni")
}

#[cfg(not(target_arch = "x86_64"))]
fn amd_with_avx512_vnni() -> bool {
    false
}

/// CPUID leaf 0's vendor string, in its register order (EBX, EDX, ECX), is "AuthenticAMD".
#[cfg(any(target_arch = "x86_64", test))]
fn is_amd_vendor(ebx: u32, edx: u32, ecx: u32) -> bool {
    let mut vendor = [0u8; 12];
    for (chunk, register) in vendor.chunks_mut(4).zip([ebx, edx, ecx]) {
        chunk.copy_from_slice(&register.to_le_bytes());
    }
    &vendor == b"AuthenticAMD"
}

/// What one iteration of the probe loop cost, with the legacy-SSE load and with its VEX form.
#[derive(Debug, Clone, Copy)]
pub struct Penalty {
    pub legacy_ns: f64,
    pub vex_ns: f64,
}

impl Penalty {
    pub fn ratio(&self) -> f64 {
        self.legacy_ns / self.vex_ns.max(1e-3)
    }

    /// Over 10 ns (tens of cycles) and over 8× the VEX form: far from both the 1–2 ns of a machine without the
    /// penalty and the ~117 ns measured with it.
    pub fn is_prohibitive(&self) -> bool {
        self.legacy_ns > 10.0 && self.ratio() > 8.0
    }
}

/// The probe's verdict: `Some` where a legacy-SSE load after 256-bit AVX is both slow in absolute terms (over 10 ns,
/// tens of cycles) and over 8× its VEX form; `None` where it is not, or where there is no AVX2 to worry about.
pub fn sse_after_avx_penalty() -> Option<Penalty> {
    measure().filter(Penalty::is_prohibitive)
}

/// Times both loops, best of three rounds each, interleaved, so that a descheduled round does not decide.
#[cfg(target_arch = "x86_64")]
pub fn measure() -> Option<Penalty> {
    if !std::arch::is_x86_feature_detected!("avx2") {
        return None;
    }
    const ITERATIONS: u64 = 4_000;
    let data = [0x0101_0101_0101_0101u64; 8];
    let time = |legacy: bool| {
        let start = std::time::Instant::now();
        // SAFETY: AVX2 is present (checked above); both loops only read `data` and write the registers they
        // declare, and end with vzeroupper.
        unsafe { probe_loop(data.as_ptr().cast(), ITERATIONS, legacy) };
        start.elapsed().as_secs_f64() * 1e9 / ITERATIONS as f64
    };
    let (mut legacy_ns, mut vex_ns) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..3 {
        legacy_ns = legacy_ns.min(time(true));
        vex_ns = vex_ns.min(time(false));
    }
    Some(Penalty { legacy_ns, vex_ns })
}

#[cfg(not(target_arch = "x86_64"))]
pub fn measure() -> Option<Penalty> {
    None
}

/// tract's inner-loop pattern: a 256-bit register is dirty, then 8 bytes are loaded into an xmm register (legacy
/// `movq` or VEX `vmovq`), widened and accumulated in 256 bits.
#[cfg(target_arch = "x86_64")]
unsafe fn probe_loop(data: *const u8, iterations: u64, legacy: bool) {
    // One loop, written once; only its load instruction differs (asm! templates must be literals).
    macro_rules! probe {
        ($load:literal) => {
            std::arch::asm!(
                "vpcmpeqd ymm9, ymm9, ymm9",
                "2:",
                $load,
                "vpmovsxbw ymm8, xmm8",
                "vpaddw ymm9, ymm9, ymm8",
                "dec rcx",
                "jnz 2b",
                "vzeroupper",
                data = in(reg) data,
                inout("rcx") iterations => _,
                // vzeroupper clears the upper half of every vector register: all of them are declared clobbered.
                clobber_abi("C"),
                options(nostack, readonly),
            )
        };
    }
    if legacy {
        probe!("movq xmm8, qword ptr [{data}]");
    } else {
        probe!("vmovq xmm8, qword ptr [{data}]");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_slow_and_lopsided_legacy_load_is_prohibitive() {
        let p = |legacy_ns, vex_ns| Penalty { legacy_ns, vex_ns };
        assert!(p(117.0, 1.1).is_prohibitive(), "the AMD EPYC / KVM measurement");
        assert!(!p(1.2, 1.1).is_prohibitive(), "no penalty");
        assert!(!p(12.0, 6.0).is_prohibitive(), "a slow machine, but both loops alike");
        assert!(!p(9.0, 0.5).is_prohibitive(), "lopsided but a few cycles: not worth a slower kernel");
    }

    #[test]
    fn the_vendor_string_is_read_in_cpuid_register_order() {
        let word = |s: &[u8; 4]| u32::from_le_bytes(*s);
        assert!(is_amd_vendor(word(b"Auth"), word(b"enti"), word(b"cAMD")));
        assert!(!is_amd_vendor(word(b"Genu"), word(b"ineI"), word(b"ntel")));
        assert!(!is_amd_vendor(word(b"Auth"), word(b"cAMD"), word(b"enti")), "ECX and EDX swapped");
    }

    #[test]
    fn the_probe_times_both_loops_where_there_is_avx2() {
        #[cfg(target_arch = "x86_64")]
        let expected = std::arch::is_x86_feature_detected!("avx2");
        #[cfg(not(target_arch = "x86_64"))]
        let expected = false;
        match measure() {
            Some(p) => assert!(expected && p.legacy_ns > 0.0 && p.vex_ns > 0.0 && p.legacy_ns.is_finite(), "{p:?}"),
            None => assert!(!expected),
        }
    }
}
