//! Packing the int8 activations for tract's int8 matmul kernels four bytes at a time.
//!
//! After codegen, each int8 matmul reads its quantized activations through an `OptMatMulPack` node that lays the
//! rows out in the kernel's K4 panels (`PackedI8K4`: within a panel of `r` tokens, the four bytes `k..k+4` of
//! token `m` sit at `(k/4)·4r + 4m`). tract-linalg 0.23.9 writes that layout one byte at a time, after zeroing the
//! whole buffer: 10 % of an int8 layer at 64 tokens on a Zen 4 (issue 13's profile), 7 % of an input on a Pi 5 by
//! instruction count, and the one step ORT does not take (its kernels read the quantized rows in place). The four
//! bytes of a K group are adjacent in the source row as well, so [`PackI8K4`] moves them as one `u32` and zeroes
//! only the padding. The bytes it writes are tract's, bit for bit: the rewrite changes no answer anywhere, so it
//! runs on every package form and architecture.
//!
//! It runs after tract's codegen (the pack nodes exist only then), on a node whose single packer is `PackedI8K4`, whose
//! input is i8 with the K axis contiguous, and whose other axes are 1 (batch 1); anything else keeps tract's node.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::matmul::pack::{DynPackedExoticFact, OptMatMulPack};
use tract_onnx::tract_core::tract_linalg::mmm::{
    EagerPackedInput, MMMInputFormat, MMMInputValue, PackedExoticFact, PackedMatrixStorage,
};
use tract_onnx::tract_core::tract_linalg::pack::PackedI8K4;

/// `OptMatMulPack` with a single `PackedI8K4` packer, for a `[1, …, mn, …, k]`-shaped i8 input.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct PackI8K4 {
    /// The packer tract chose (its panel width `r` and alignment), kept for the output's facts and for inputs the
    /// fast path does not take.
    pub packer: PackedI8K4,
    pub k_axis: usize,
    pub mn_axis: usize,
}

impl Op for PackI8K4 {
    fn name(&self) -> StaticName {
        "PackI8K4".into()
    }

    op_as_typed_op!();
}

impl EvalOp for PackI8K4 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let view = input.view();
        let strides = input.strides();
        let packed = if input.datum_type() == i8::datum_type() && strides[self.k_axis] == 1 {
            self.pack_rows(&input)?
        } else {
            self.packer.prepare_one_view(&view, self.k_axis, self.mn_axis)?
        };
        let batch = self.batch_shape(input.shape());
        Ok(tvec!(PackedMatrixStorage::new_batched(&batch, tvec![packed]).into_tensor(input.datum_type()).into_tvalue()))
    }
}

impl TypedOp for PackI8K4 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = &inputs[0].shape;
        let exotic = DynPackedExoticFact {
            k: shape[self.k_axis].clone(),
            mn: shape[self.mn_axis].clone(),
            packers: vec![Box::new(self.packer.clone()) as Box<dyn MMMInputFormat>],
        };
        let batch: TVec<TDim> = (0..shape.rank())
            .filter(|&ix| ix != self.k_axis && ix != self.mn_axis)
            .map(|ix| shape[ix].clone())
            .collect();
        Ok(tvec!(inputs[0].datum_type.fact(batch).with_exotic_fact(exotic)))
    }

    as_op!();
}

impl PackI8K4 {
    fn batch_shape(&self, shape: &[usize]) -> TVec<usize> {
        (0..shape.len()).filter(|&ix| ix != self.k_axis && ix != self.mn_axis).map(|ix| shape[ix]).collect()
    }

    /// tract's K4 layout, written a K group (four bytes, adjacent in the row) at a time.
    fn pack_rows(&self, input: &Tensor) -> TractResult<Box<dyn MMMInputValue>> {
        let (k, mn) = (input.shape()[self.k_axis], input.shape()[self.mn_axis]);
        let row_stride = input.strides()[self.mn_axis] as usize;
        let r = self.packer.r;
        let groups = k / 4;
        let padded_k = k.div_ceil(4) * 4;
        let panel_bytes = padded_k * r;
        let panels = mn.div_ceil(r);
        // SAFETY: every byte is written below before the blob is read: the rows' K groups and tails by the loop, the
        // padding (K beyond k, tokens beyond mn in the last panel) by the zeroing just after.
        let mut blob = unsafe { Blob::new_for_size_and_align(panels * panel_bytes, self.packer.alignment()) };
        let bytes = blob.as_bytes_mut();
        if padded_k != k {
            bytes.fill(0);
        } else if mn % r != 0 {
            bytes[(panels - 1) * panel_bytes..].fill(0);
        }
        let src = input.try_as_plain_ram()?;
        let src = as_bytes(src.as_slice::<i8>()?);
        for m in 0..mn {
            let row = &src[m * row_stride..][..k];
            let panel = &mut bytes[(m / r) * panel_bytes..][..panel_bytes];
            let lane = (m % r) * 4;
            for (g, quad) in row.chunks_exact(4).enumerate() {
                let at = g * 4 * r + lane;
                panel[at..at + 4].copy_from_slice(quad);
            }
            for (kr, &v) in row[groups * 4..].iter().enumerate() {
                panel[groups * 4 * r + lane + kr] = v;
            }
        }
        Ok(Box::new(EagerPackedInput {
            fact: PackedExoticFact { format: Box::new(self.packer.clone()), mn: mn.to_dim(), k },
            packed: Arc::new(blob),
            panel_bytes,
            mn,
        }))
    }
}

/// The bytes of an i8 slice (the packing moves bytes; their sign does not matter).
fn as_bytes(v: &[i8]) -> &[u8] {
    // SAFETY: i8 and u8 have the same size and alignment, and every bit pattern is valid for both.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), v.len()) }
}

/// Replaces every `OptMatMulPack` of the optimized `model` that [`PackI8K4`] can take; returns how many.
pub fn fuse(model: &mut TypedModel) -> TractResult<usize> {
    let mut replaced = 0;
    for id in 0..model.nodes().len() {
        let Some(op) = model.node(id).op_as::<OptMatMulPack>() else { continue };
        let input = model.outlet_fact(model.node(id).inputs[0])?.clone();
        let output = model.outlet_fact(OutletId::new(id, 0))?.clone();
        let Some(exotic) = output.exotic_fact.as_ref().and_then(|f| f.downcast_ref::<DynPackedExoticFact>()) else {
            continue;
        };
        let [packer] = exotic.packers.as_slice() else { continue };
        let Some(packer) = packer.downcast_ref::<PackedI8K4>() else { continue };
        if input.datum_type != i8::datum_type() {
            continue;
        }
        let mapping = op.axes_mapping(&[&input], &[&output])?;
        let axis_of = |repr| mapping.axis(repr).ok().and_then(|a| a.inputs[0].first().copied());
        let (Some(k_axis), Some(mn_axis)) = (axis_of('K'), axis_of('M')) else { continue };
        let batch_of_one =
            (0..input.rank()).filter(|&ix| ix != k_axis && ix != mn_axis).all(|ix| input.shape[ix].is_one());
        if !batch_of_one {
            continue;
        }
        let ours = PackI8K4 { packer: packer.clone(), k_axis, mn_axis };
        ensure!(
            ours.output_facts(&[&input])?[0] == output,
            "PackI8K4 would change node {}'s facts",
            model.node(id).name
        );
        model.node_mut(id).op = Box::new(ours);
        replaced += 1;
    }
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packed bytes of a value, panel after panel.
    fn packed_bytes(value: &dyn MMMInputValue) -> Vec<u8> {
        let eager = value.downcast_ref::<EagerPackedInput>().expect("an eager packed input");
        eager.packed.as_bytes().to_vec()
    }

    #[test]
    fn the_rows_are_packed_exactly_as_tract_packs_them() {
        for (r, k, mn) in [(16, 384, 64), (16, 384, 30), (8, 1536, 17), (16, 10, 5), (8, 7, 1), (16, 4, 16)] {
            let values: Vec<i8> = (0..k * mn).map(|i| ((i * 37 + 11) % 255) as i8).collect();
            let input = Tensor::from_shape(&[1, mn, k], &values).unwrap();
            let packer = PackedI8K4::new(r);
            let ours = PackI8K4 { packer: packer.clone(), k_axis: 2, mn_axis: 1 };
            let fast = ours.pack_rows(&input).unwrap();
            let reference = packer.prepare_one_view(&input.view(), 2, 1).unwrap();
            assert_eq!(packed_bytes(&*fast), packed_bytes(&*reference), "r {r}, k {k}, mn {mn}");
            assert_eq!(fast.mn(), reference.mn());
        }
    }
}
