//! Reading a stage's ONNX file without holding its large tensors twice.
//!
//! tract-onnx decodes the whole protobuf first (copying every initializer's raw bytes out of the mapped file) and
//! then copies each initializer into a tensor. For the embeddings' 24 MB word table that meant the table was
//! resident twice while the package loaded: the process's peak resident set (issue 13's budget: 85 MB) paid for a
//! copy it never used again. Here the file's protobuf structure is walked first, without reading the data; the
//! raw bytes of every initializer of at least [`LARGE_BYTES`] are left out of what prost decodes and are read from
//! the file straight into their tensor's own memory. tract then parses a zero-row stand-in of each, which
//! [`LargeTensors::install`] swaps for the real tensor before the graph is typed.
//!
//! Anything unusual in the layout (a truncated or group field, raw data given twice, a data type tract does not
//! read as raw bytes, stand-ins that another initializer could be confused with) makes [`read`] give the file
//! back to tract's own reader, which reports damage as it always has: this module is an optimization, never a
//! second parser that could accept what tract refuses.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use tract_onnx::pb::{tensor_proto::DataType, ModelProto, TensorProto};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::internal::InferenceModel;
use tract_onnx::tract_hir::ops::konst::Const;

/// An initializer's raw data of at least this many bytes is read into its tensor directly. The int8 packages'
/// largest weight is 0.6 MB, so this takes the word table (and the f32 packages' feed-forward weights).
pub(crate) const LARGE_BYTES: u64 = 1 << 20;

// Field numbers of onnx.proto.
const MODEL_GRAPH: u64 = 7;
const GRAPH_INITIALIZER: u64 = 5;
const TENSOR_RAW_DATA: u64 = 9;

// Protobuf wire types.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const FIXED32: u64 = 5;

/// A stage file's protobuf, less the raw data of its large initializers, and those initializers as tensors.
pub(crate) struct StageFile {
    pub proto: ModelProto,
    pub large: LargeTensors,
}

/// The tensors whose zero-row stand-ins are in the decoded protobuf, by initializer name.
#[derive(Default)]
pub(crate) struct LargeTensors(Vec<(String, Tensor)>);

/// A length prefix in the file (`at`, `width` bytes, `value`) whose field loses `removed` bytes.
#[derive(Debug, PartialEq)]
struct Shrink {
    at: u64,
    width: usize,
    value: u64,
    removed: u64,
}

/// The raw data (`len` bytes at `at`) of the `initializer`-th initializer, left out of the decoded protobuf.
#[derive(Debug, PartialEq)]
struct Skipped {
    initializer: usize,
    at: u64,
    len: u64,
}

#[derive(Debug, Default, PartialEq)]
struct Layout {
    shrinks: Vec<Shrink>,
    skipped: Vec<Skipped>,
}

/// Reads `path` with its large initializers straight into tensors; `Ok(None)` when the file has none or its layout
/// is unusual (tract's own reader then takes it).
pub(crate) fn read(path: &Path) -> std::io::Result<Option<StageFile>> {
    let mut file = File::open(path)?;
    let size = file.metadata()?.len();
    let Some(layout) = walk(BufReader::new(&mut file), size)? else { return Ok(None) };
    if layout.skipped.is_empty() {
        return Ok(None);
    }
    let small = without_skipped(&mut file, size, &layout)?;
    let Ok(mut proto) = <ModelProto as prost::Message>::decode(small.as_slice()) else { return Ok(None) };
    drop(small);
    let Some(large) = read_large(&mut file, &mut proto, &layout.skipped)? else { return Ok(None) };
    Ok(Some(StageFile { proto, large }))
}

impl LargeTensors {
    /// Swaps each stand-in constant of `model` (tract names an initializer's node after it) for its tensor.
    pub(crate) fn install(self, model: &mut InferenceModel) -> TractResult<()> {
        for (name, tensor) in self.0 {
            let node = model.node_by_name_mut(&name)?;
            let stand_in = node.op_as::<Const>().map(|c| c.val().shape().to_vec());
            anyhow::ensure!(
                stand_in.as_deref().is_some_and(|shape| shape.first() == Some(&0)),
                "initializer {name}: its stand-in is not a zero-row constant"
            );
            let tensor = tensor.into_arc_tensor();
            node.outputs[0].fact = TypedFact::try_from(tensor.clone())?.into();
            node.op = Box::new(Const::new(tensor)?);
        }
        Ok(())
    }
}

/// A field's header: its number, its wire type, and for a length-delimited field the length prefix (where it is,
/// its width, the length).
type Header = (u64, u64, Option<(u64, usize, u64)>);

/// Reads what a position in the file holds, keeping count of the position.
struct Walker<R> {
    reader: R,
    pos: u64,
    size: u64,
}

impl<R: Read + Seek> Walker<R> {
    /// A varint and how many bytes it took; `None` past the end or beyond ten bytes.
    fn varint(&mut self) -> std::io::Result<Option<(u64, usize)>> {
        let mut value = 0u64;
        for width in 1..=10 {
            if self.pos >= self.size {
                return Ok(None);
            }
            let mut byte = [0u8];
            self.reader.read_exact(&mut byte)?;
            self.pos += 1;
            value |= u64::from(byte[0] & 0x7f).checked_shl(7 * (width as u32 - 1)).unwrap_or(0);
            if byte[0] & 0x80 == 0 {
                return Ok(Some((value, width)));
            }
        }
        Ok(None)
    }

    /// Moves `n` bytes on; `false` if that passes `end`.
    fn skip(&mut self, n: u64, end: u64) -> std::io::Result<bool> {
        match self.pos.checked_add(n) {
            Some(to) if to <= end => {
                let n = i64::try_from(n).map_err(|_| std::io::Error::other("field too long"))?;
                self.reader.seek_relative(n)?;
                self.pos = to;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// One field's header up to its value: (field number, wire type, and for LEN fields the length prefix).
    fn header(&mut self, end: u64) -> std::io::Result<Option<Header>> {
        let Some((tag, _)) = self.varint()? else { return Ok(None) };
        let (field, wire) = (tag >> 3, tag & 7);
        if wire != LEN {
            return Ok(Some((field, wire, None)));
        }
        let at = self.pos;
        let Some((len, width)) = self.varint()? else { return Ok(None) };
        match self.pos.checked_add(len) {
            Some(to) if to <= end => Ok(Some((field, wire, Some((at, width, len))))),
            _ => Ok(None),
        }
    }

    /// Skips a field that is not descended into; `false` on a group or a field past `end`.
    fn skip_value(&mut self, wire: u64, len: Option<(u64, usize, u64)>, end: u64) -> std::io::Result<bool> {
        match (wire, len) {
            (VARINT, _) => Ok(self.varint()?.is_some() && self.pos <= end),
            (FIXED64, _) => self.skip(8, end),
            (FIXED32, _) => self.skip(4, end),
            (LEN, Some((_, _, len))) => self.skip(len, end),
            _ => Ok(false),
        }
    }
}

/// Finds the large raw data of a ModelProto's initializers and every length prefix that encloses them; `None` on
/// an unusual layout. Initializers are counted across graph fields, as prost merges repeated graph fields into one.
fn walk<R: Read + Seek>(reader: R, size: u64) -> std::io::Result<Option<Layout>> {
    let mut w = Walker { reader, pos: 0, size };
    let mut layout = Layout::default();
    let mut initializer = 0;
    let found = descend(&mut w, size, &mut layout, MODEL_GRAPH, &mut |w, end, layout| {
        descend(w, end, layout, GRAPH_INITIALIZER, &mut |w, end, layout| {
            let inside = walk_tensor(w, end, initializer, layout);
            initializer += 1;
            inside
        })
    })?;
    Ok(found.map(|_| layout))
}

/// Walks one length-delimited field's value (the walker at its start, its end): how many of its bytes are left out.
type Inner<'a, R> = dyn FnMut(&mut Walker<R>, u64, &mut Layout) -> std::io::Result<Option<u64>> + 'a;

/// The fields of a message up to `end`: each `field` (length-delimited) is walked by `inner`, which says how many
/// of its bytes are left out (its length prefix then shrinks by as many); every other field is skipped. The bytes
/// left out in all, or `None` on an unusual layout.
fn descend<R: Read + Seek>(
    w: &mut Walker<R>,
    end: u64,
    layout: &mut Layout,
    field: u64,
    inner: &mut Inner<'_, R>,
) -> std::io::Result<Option<u64>> {
    let mut removed = 0;
    while w.pos < end {
        let Some((number, wire, len)) = w.header(end)? else { return Ok(None) };
        match len {
            Some((at, width, value)) if number == field => {
                let Some(inside) = inner(w, w.pos + value, layout)? else { return Ok(None) };
                if inside > 0 {
                    layout.shrinks.push(Shrink { at, width, value, removed: inside });
                    removed += inside;
                }
            }
            _ => {
                if !w.skip_value(wire, len, end)? {
                    return Ok(None);
                }
            }
        }
    }
    Ok(Some(removed))
}

/// A TensorProto up to `end`: the length of its raw data if that is large (0 if not), `None` on an unusual
/// layout (raw data given twice, where prost would keep the last).
fn walk_tensor<R: Read + Seek>(
    w: &mut Walker<R>,
    end: u64,
    initializer: usize,
    layout: &mut Layout,
) -> std::io::Result<Option<u64>> {
    let (mut removed, mut raw_fields) = (0, 0);
    while w.pos < end {
        let Some((field, wire, len)) = w.header(end)? else { return Ok(None) };
        if let (TENSOR_RAW_DATA, Some((at, width, value))) = (field, len) {
            raw_fields += 1;
            if value >= LARGE_BYTES {
                layout.shrinks.push(Shrink { at, width, value, removed: value });
                layout.skipped.push(Skipped { initializer, at: w.pos, len: value });
                removed = value;
            }
        }
        if !w.skip_value(wire, len, end)? {
            return Ok(None);
        }
    }
    Ok(if raw_fields > 1 && removed > 0 { None } else { Some(removed) })
}

/// The file less the skipped raw data, with every enclosing length prefix rewritten at its old width (protobuf
/// allows a varint's padding with continuation bytes, so nothing before a prefix moves).
fn without_skipped(file: &mut File, size: u64, layout: &Layout) -> std::io::Result<Vec<u8>> {
    let skipped_total: u64 = layout.skipped.iter().map(|s| s.len).sum();
    let mut small = Vec::with_capacity(usize::try_from(size - skipped_total).unwrap_or(0));
    let mut from = 0;
    for s in &layout.skipped {
        file.seek(SeekFrom::Start(from))?;
        (&mut *file).take(s.at - from).read_to_end(&mut small)?;
        from = s.at + s.len;
    }
    file.seek(SeekFrom::Start(from))?;
    (&mut *file).take(size - from).read_to_end(&mut small)?;
    for shrink in &layout.shrinks {
        let before: u64 = layout.skipped.iter().filter(|s| s.at + s.len <= shrink.at).map(|s| s.len).sum();
        let at = (shrink.at - before) as usize;
        padded_varint(shrink.value - shrink.removed, &mut small[at..at + shrink.width]);
    }
    Ok(small)
}

/// `value` as a varint of exactly `out.len()` bytes (it must fit: it is never larger than what was there).
fn padded_varint(value: u64, out: &mut [u8]) {
    let last = out.len() - 1;
    for (k, byte) in out.iter_mut().enumerate() {
        let bits = (value.checked_shr(7 * k as u32).unwrap_or(0) & 0x7f) as u8;
        *byte = if k < last { bits | 0x80 } else { bits };
    }
}

/// Reads each skipped raw data into a tensor of its initializer's type and shape and turns the initializer into a
/// zero-row stand-in; `None` if one cannot be read as raw bytes or two stand-ins could be mistaken for each other
/// (tract's parser merges equal constants).
fn read_large(file: &mut File, proto: &mut ModelProto, skipped: &[Skipped]) -> std::io::Result<Option<LargeTensors>> {
    let Some(graph) = proto.graph.as_mut() else { return Ok(None) };
    let mut large = Vec::with_capacity(skipped.len());
    for s in skipped {
        let Some(init) = graph.initializer.get(s.initializer) else { return Ok(None) };
        let Some((dt, shape)) = raw_tensor_type(init, s.len) else { return Ok(None) };
        // SAFETY: every byte of the tensor is written by read_exact below before it is used, and `dt` is a plain
        // number type, for which any bytes are a valid value.
        let mut tensor = match unsafe { Tensor::uninitialized_dt(dt, &shape) } {
            Ok(tensor) => tensor,
            Err(_) => return Ok(None),
        };
        file.seek(SeekFrom::Start(s.at))?;
        file.read_exact(tensor.as_bytes_mut())?;
        large.push((init.name.clone(), tensor));
    }
    for s in skipped {
        graph.initializer[s.initializer].dims[0] = 0;
    }
    let stand_in = |t: &TensorProto| (t.data_type, t.dims.clone());
    let stand_ins: Vec<_> = skipped.iter().map(|s| stand_in(&graph.initializer[s.initializer])).collect();
    let clashes = graph.initializer.iter().enumerate().any(|(i, t)| {
        let ours = skipped.iter().position(|s| s.initializer == i);
        stand_ins.iter().enumerate().any(|(k, si)| Some(k) != ours && stand_in(t) == *si)
    });
    Ok(if clashes { None } else { Some(LargeTensors(large)) })
}

/// The tract type and shape of a raw-data initializer of `len` bytes, if it is a number type whose bytes fill
/// exactly that shape.
fn raw_tensor_type(init: &TensorProto, len: u64) -> Option<(DatumType, Vec<usize>)> {
    let dt: DatumType = DataType::try_from(init.data_type).ok()?.try_into().ok()?;
    let number = dt.is_float() || dt.is_integer();
    let shape: Vec<usize> = init.dims.iter().map(|&d| usize::try_from(d).ok()).collect::<Option<_>>()?;
    let bytes = shape.iter().try_fold(dt.size_of(), |n, &d| n.checked_mul(d))?;
    (number && !shape.is_empty() && bytes as u64 == len).then_some((dt, shape))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn field(number: u64, body: &[u8], out: &mut Vec<u8>) {
        varint(number << 3 | LEN, out);
        varint(body.len() as u64, out);
        out.extend_from_slice(body);
    }

    /// A TensorProto: dims (unpacked, as onnx.proto is proto2), data type, name, raw data.
    fn tensor(name: &str, dims: &[u64], data_type: u64, raw: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        for &d in dims {
            varint(1 << 3 | VARINT, &mut t);
            varint(d, &mut t);
        }
        varint(2 << 3 | VARINT, &mut t);
        varint(data_type, &mut t);
        field(8, name.as_bytes(), &mut t);
        field(TENSOR_RAW_DATA, raw, &mut t);
        t
    }

    fn model(initializers: &[Vec<u8>]) -> Vec<u8> {
        let mut graph = Vec::new();
        field(2, b"graph-name", &mut graph);
        for init in initializers {
            field(GRAPH_INITIALIZER, init, &mut graph);
        }
        let mut model = Vec::new();
        varint(1 << 3 | VARINT, &mut model); // ir_version
        varint(8, &mut model);
        field(MODEL_GRAPH, &graph, &mut model);
        model
    }

    fn write(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, bytes).unwrap();
        file
    }

    #[test]
    fn a_large_raw_data_is_read_into_its_tensor_and_left_out_of_the_protobuf() {
        let rows = (LARGE_BYTES / 8 + 3) as usize; // f16 [rows, 4]: just over the threshold
        let raw: Vec<u8> = (0..rows * 8).map(|i| (i * 7 % 251) as u8).collect();
        let small = tensor("bias", &[2], 1, &[0, 0, 128, 63, 0, 0, 0, 64]);
        let bytes = model(&[small.clone(), tensor("table", &[rows as u64, 4], 10, &raw)]);
        let file = write(&bytes);

        let read = read(file.path()).unwrap().expect("a large initializer");
        let graph = read.proto.graph.as_ref().unwrap();
        assert_eq!(graph.name, "graph-name");
        assert_eq!(graph.initializer[0].raw_data, [0, 0, 128, 63, 0, 0, 0, 64], "small raw data stays");
        assert_eq!(graph.initializer[1].dims, [0, 4], "the stand-in has no rows");
        assert!(graph.initializer[1].raw_data.is_empty());
        let LargeTensors(large) = read.large;
        assert_eq!(large.len(), 1);
        assert_eq!(large[0].0, "table");
        assert_eq!(large[0].1.datum_type(), DatumType::F16);
        assert_eq!(large[0].1.shape(), [rows, 4]);
        assert_eq!(large[0].1.as_bytes(), raw.as_slice());
    }

    #[test]
    fn files_without_large_data_or_with_an_odd_layout_go_to_tracts_reader() {
        let small = model(&[tensor("w", &[2, 2], 1, &[0; 16])]);
        assert!(read(write(&small).path()).unwrap().is_none(), "nothing large");

        let rows = LARGE_BYTES / 4;
        let big = model(&[tensor("w", &[rows, 1], 1, &vec![0; rows as usize * 4])]);
        for cut in [1, 5, big.len() / 2, big.len() - 1] {
            assert!(read(write(&big[..cut]).path()).unwrap().is_none(), "truncated at {cut}");
        }
        let wrong_size = model(&[tensor("w", &[rows + 1, 1], 1, &vec![0; rows as usize * 4])]);
        assert!(read(write(&wrong_size).path()).unwrap().is_none(), "shape and bytes disagree");
        let strings = model(&[tensor("w", &[rows], 8, &vec![0; rows as usize])]);
        assert!(read(write(&strings).path()).unwrap().is_none(), "not a number type");
        let twins = model(&[
            tensor("a", &[rows, 1], 1, &vec![0; rows as usize * 4]),
            tensor("b", &[rows, 1], 1, &vec![0; rows as usize * 4]),
        ]);
        assert!(read(write(&twins).path()).unwrap().is_none(), "equal stand-ins would be merged by tract");
        assert!(read(write(&big).path()).unwrap().is_some(), "the intact file is taken");
    }

    #[test]
    fn padded_varints_decode_to_their_value() {
        for (value, width) in [(0u64, 1usize), (0, 4), (5, 3), (300, 2), (300, 5), (u64::MAX >> 1, 10)] {
            let mut out = vec![0xff; width];
            padded_varint(value, &mut out);
            let mut w = Walker { reader: Cursor::new(out), pos: 0, size: width as u64 };
            assert_eq!(w.varint().unwrap(), Some((value, width)));
        }
    }

    #[test]
    fn the_walk_finds_each_enclosing_length_prefix() {
        let rows = LARGE_BYTES / 4;
        let bytes = model(&[tensor("w", &[rows, 1], 1, &vec![1; rows as usize * 4])]);
        let layout = walk(Cursor::new(&bytes), bytes.len() as u64).unwrap().unwrap();
        assert_eq!(layout.skipped.len(), 1);
        assert_eq!(layout.skipped[0].len, rows * 4);
        assert_eq!(layout.shrinks.len(), 3, "raw data, initializer, graph: {:?}", layout.shrinks);
        assert!(layout.shrinks.iter().all(|s| s.removed == rows * 4));
    }

    #[test]
    fn the_shipped_embeddings_read_alike_both_ways() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/sst2-minilm-l6/embeddings.onnx");
        let onnx = tract_onnx::onnx();
        let reference = onnx.model_for_path(&path).unwrap();
        let StageFile { proto, large } = read(&path).unwrap().expect("the word table is large");
        assert_eq!(large.0.len(), 1, "only the word table is over the threshold");
        let mut ours = onnx.parse(&proto, None).unwrap().model;
        large.install(&mut ours).unwrap();
        assert_eq!(ours.nodes().len(), reference.nodes().len());
        let mut constants = 0;
        for node in reference.nodes() {
            let other = ours.node_by_name(&node.name).unwrap();
            assert_eq!(other.outputs[0].fact, node.outputs[0].fact, "{}", node.name);
            if let Some(konst) = node.op_as::<Const>() {
                assert_eq!(other.op_as::<Const>().unwrap().val(), konst.val(), "{}", node.name);
                constants += 1;
            }
        }
        assert!(constants > 3);
    }
}
