//! A small builder over the ONNX protobuf types (`tract_onnx::pb`, prost messages), so that the stage graphs read
//! as a list of standard operators instead of protobuf plumbing.

use prost::Message;
use tract_onnx::pb::{
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto, type_proto, AttributeProto, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

/// The ONNX opset of every exported graph: 17 has LayerNormalization, and keeps `axes` of the Reduce* operators
/// as attributes (they became inputs in 18). Both tract and ONNX Runtime implement it fully.
pub const OPSET: i64 = 17;
/// IR version 8 goes with opset 17.
pub const IR_VERSION: i64 = 8;

/// A dimension of a graph input or output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    Fixed(usize),
    Symbol(&'static str),
}

/// An element type, with its ONNX code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    F32,
    F16,
    I8,
    I32,
    I64,
}

impl Elem {
    pub fn onnx(self) -> DataType {
        match self {
            Elem::F32 => DataType::Float,
            Elem::F16 => DataType::Float16,
            Elem::I8 => DataType::Int8,
            Elem::I32 => DataType::Int32,
            Elem::I64 => DataType::Int64,
        }
    }
}

/// An operator attribute.
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
}

/// Builds one graph. Values are referred to by name; [`GraphBuilder::op`] returns the name of the new output.
pub struct GraphBuilder {
    graph: GraphProto,
    counter: usize,
}

impl GraphBuilder {
    pub fn new(name: &str) -> Self {
        Self { graph: GraphProto { name: name.to_string(), ..Default::default() }, counter: 0 }
    }

    fn value_info(name: &str, elem: Elem, dims: &[Dim]) -> ValueInfoProto {
        let dim = dims
            .iter()
            .map(|d| tensor_shape_proto::Dimension {
                denotation: String::new(),
                value: Some(match d {
                    Dim::Fixed(n) => tensor_shape_proto::dimension::Value::DimValue(*n as i64),
                    Dim::Symbol(s) => tensor_shape_proto::dimension::Value::DimParam(s.to_string()),
                }),
            })
            .collect();
        ValueInfoProto {
            name: name.to_string(),
            r#type: Some(TypeProto {
                denotation: String::new(),
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: elem.onnx() as i32,
                    shape: Some(TensorShapeProto { dim }),
                })),
            }),
            doc_string: String::new(),
        }
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, elem: Elem, dims: &[Dim]) -> String {
        self.graph.input.push(Self::value_info(name, elem, dims));
        name.to_string()
    }

    /// Declares `value` as the graph output `name` (through an Identity when the names differ).
    pub fn output(&mut self, value: &str, name: &str, elem: Elem, dims: &[Dim]) {
        if value != name {
            self.graph.node.push(NodeProto {
                input: vec![value.to_string()],
                output: vec![name.to_string()],
                name: format!("{name}_identity"),
                op_type: "Identity".into(),
                ..Default::default()
            });
        }
        self.graph.output.push(Self::value_info(name, elem, dims));
    }

    fn initializer(&mut self, name: &str, elem: Elem, dims: &[usize], raw: Vec<u8>) -> String {
        self.graph.initializer.push(TensorProto {
            name: name.to_string(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: elem.onnx() as i32,
            raw_data: raw,
            ..Default::default()
        });
        name.to_string()
    }

    pub fn f32s(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        assert_eq!(dims.iter().product::<usize>(), data.len(), "initializer {name}: data does not match dims");
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(name, Elem::F32, dims, raw)
    }

    pub fn f16s(&mut self, name: &str, dims: &[usize], data: &[half::f16]) -> String {
        assert_eq!(dims.iter().product::<usize>(), data.len(), "initializer {name}: data does not match dims");
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(name, Elem::F16, dims, raw)
    }

    pub fn i8s(&mut self, name: &str, dims: &[usize], data: &[i8]) -> String {
        assert_eq!(dims.iter().product::<usize>(), data.len(), "initializer {name}: data does not match dims");
        let raw = data.iter().map(|&v| v as u8).collect();
        self.initializer(name, Elem::I8, dims, raw)
    }

    pub fn i64s(&mut self, name: &str, dims: &[usize], data: &[i64]) -> String {
        assert_eq!(dims.iter().product::<usize>(), data.len(), "initializer {name}: data does not match dims");
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.initializer(name, Elem::I64, dims, raw)
    }

    /// A scalar f32 constant (rank 0), named after its role.
    pub fn scalar(&mut self, name: &str, value: f32) -> String {
        self.f32s(name, &[], &[value])
    }

    /// Adds a node with one output and returns that output's name.
    pub fn op(&mut self, op_type: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        let [output] = self.op_n(op_type, inputs, attrs);
        output
    }

    /// Adds a node with `N` outputs (`DynamicQuantizeLinear` has three) and returns their names in order.
    pub fn op_n<const N: usize>(&mut self, op_type: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> [String; N] {
        self.counter += 1;
        let base = format!("{}_{}", op_type.to_ascii_lowercase(), self.counter);
        // One output keeps the plain name, so that graphs written before multi-output nodes are unchanged.
        let outputs: [String; N] = std::array::from_fn(|i| if N == 1 { base.clone() } else { format!("{base}_{i}") });
        let attribute = attrs
            .into_iter()
            .map(|(name, value)| {
                let mut a = AttributeProto { name: name.to_string(), ..Default::default() };
                match value {
                    Attr::Int(i) => {
                        a.r#type = AttributeType::Int as i32;
                        a.i = i;
                    }
                    Attr::Ints(v) => {
                        a.r#type = AttributeType::Ints as i32;
                        a.ints = v;
                    }
                    Attr::Float(f) => {
                        a.r#type = AttributeType::Float as i32;
                        a.f = f;
                    }
                }
                a
            })
            .collect();
        self.graph.node.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.to_vec(),
            name: format!("{}_{}", op_type, self.counter),
            op_type: op_type.to_string(),
            attribute,
            ..Default::default()
        });
        outputs
    }

    pub fn build(self) -> ModelProto {
        ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
            producer_name: "cosee-tools".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(self.graph),
            ..Default::default()
        }
    }
}

/// The protobuf bytes of a model.
pub fn encode(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::prelude::*;

    /// y = x·2 + 1 with a symbolic length: the builder's output loads in tract and computes.
    #[test]
    fn built_graph_runs_in_tract_with_a_symbolic_dim() {
        let mut g = GraphBuilder::new("affine");
        let x = g.input("x", Elem::F32, &[Dim::Symbol("n")]);
        let two = g.scalar("two", 2.0);
        let one = g.scalar("one", 1.0);
        let y = g.op("Mul", &[&x, &two], vec![]);
        let y = g.op("Add", &[&y, &one], vec![]);
        g.output(&y, "y", Elem::F32, &[Dim::Symbol("n")]);
        let bytes = encode(&g.build());
        let model = tract_onnx::onnx().model_for_read(&mut bytes.as_slice()).unwrap();
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
        for n in [1usize, 5] {
            let x = tract_ndarray::Array1::from_iter((0..n).map(|i| i as f32)).into_tensor();
            let out = plan.run(tvec!(x.into())).unwrap();
            let y = out[0].to_plain_array_view::<f32>().unwrap();
            let expected: Vec<f32> = (0..n).map(|i| i as f32 * 2.0 + 1.0).collect();
            assert_eq!(y.iter().copied().collect::<Vec<_>>(), expected);
        }
    }

    #[test]
    fn attributes_and_initializers_encode() {
        let mut g = GraphBuilder::new("t");
        g.i8s("w", &[2], &[-127, 127]);
        g.op("ReduceMax", &["w"], vec![("axes", Attr::Ints(vec![-1])), ("keepdims", Attr::Int(1))]);
        let model = g.build();
        let graph = model.graph.as_ref().unwrap();
        assert_eq!(graph.initializer[0].raw_data, vec![0x81, 0x7f]);
        assert_eq!(graph.node[0].attribute[0].ints, vec![-1]);
        assert_eq!(model.opset_import[0].version, OPSET);
    }
}
