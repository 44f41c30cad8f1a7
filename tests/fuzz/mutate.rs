//! Mutations of real files: the damage a disk, a copy or a hand edit does (bytes flipped, cut, inserted,
//! duplicated), and, for JSON, a value of another type or out of range put at a path the file has.

use proptest::prelude::*;
use proptest::sample::Index;

/// One edit of a byte string.
#[derive(Debug, Clone)]
pub enum Edit {
    Flip(Index, u8),
    Set(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Truncate(Index),
    Duplicate(Index, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<Index>(), 1u8..=255).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<Index>(), prop_oneof![Just(0u8), Just(b'"'), Just(b'{'), Just(b'9'), Just(b'-'), any::<u8>()])
            .prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<Index>(), 1usize..64).prop_map(|(i, n)| Edit::Delete(i, n)),
        any::<Index>().prop_map(Edit::Truncate),
        (any::<Index>(), 1usize..256).prop_map(|(i, n)| Edit::Duplicate(i, n)),
    ]
}

/// One to eight edits.
pub fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(edit(), 1..8)
}

pub fn apply(original: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut bytes = original.to_vec();
    for e in edits {
        if bytes.is_empty() {
            break;
        }
        let len = bytes.len();
        match e {
            Edit::Flip(i, b) => bytes[i.index(len)] ^= b,
            Edit::Set(i, b) => bytes[i.index(len)] = *b,
            Edit::Insert(i, b) => {
                let at = i.index(len + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            Edit::Delete(i, n) => {
                let at = i.index(len);
                bytes.drain(at..(at + n).min(len));
            }
            Edit::Truncate(i) => bytes.truncate(i.index(len)),
            Edit::Duplicate(i, n) => {
                let at = i.index(len);
                let part: Vec<u8> = bytes[at..(at + n).min(len)].to_vec();
                bytes.splice(at..at, part);
            }
        }
    }
    bytes
}

/// A JSON value of any type, extremes included.
pub fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{json, Value};
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        prop_oneof![Just(0i64), Just(-1), Just(i64::MIN), Just(i64::MAX), any::<i64>()].prop_map(Value::from),
        Just(json!(u64::MAX)),
        prop_oneof![Just(1e308f64), Just(-1e308), Just(5e-324), Just(-0.0), Just(0.5), any::<f64>()]
            .prop_filter_map("finite", |f| f.is_finite().then(|| Value::from(f))),
        ".{0,12}".prop_map(Value::from),
        Just(json!([])),
        Just(json!({})),
        Just(json!([1e308, -1, "x", null])),
        Just(json!(vec![0; 4096])),
    ]
}

/// Every path (object keys and array indices) of a JSON document.
pub fn paths(value: &serde_json::Value) -> Vec<Vec<PathStep>> {
    let mut out = Vec::new();
    fn walk(v: &serde_json::Value, at: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
        out.push(at.clone());
        match v {
            serde_json::Value::Object(map) => {
                for (k, child) in map {
                    at.push(PathStep::Key(k.clone()));
                    walk(child, at, out);
                    at.pop();
                }
            }
            serde_json::Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    at.push(PathStep::Index(i));
                    walk(child, at, out);
                    at.pop();
                }
            }
            _ => {}
        }
    }
    walk(value, &mut Vec::new(), &mut out);
    out
}

#[derive(Debug, Clone)]
pub enum PathStep {
    Key(String),
    Index(usize),
}

/// What to do at a path of a JSON document.
#[derive(Debug, Clone)]
pub enum JsonEdit {
    Replace(Index, serde_json::Value),
    Remove(Index),
}

pub fn json_edits() -> impl Strategy<Value = Vec<JsonEdit>> {
    let one = prop_oneof![
        3 => (any::<Index>(), json_value()).prop_map(|(i, v)| JsonEdit::Replace(i, v)),
        1 => any::<Index>().prop_map(JsonEdit::Remove),
    ];
    prop::collection::vec(one, 1..4)
}

pub fn apply_json(original: &serde_json::Value, edits: &[JsonEdit]) -> serde_json::Value {
    let mut doc = original.clone();
    for e in edits {
        let all = paths(&doc);
        let (JsonEdit::Replace(i, _) | JsonEdit::Remove(i)) = e;
        let path = &all[i.index(all.len())];
        let Some((last, parent)) = path.split_last() else {
            if let JsonEdit::Replace(_, v) = e {
                doc = v.clone();
            }
            continue;
        };
        let mut target = &mut doc;
        for step in parent {
            target = match step {
                PathStep::Key(k) => &mut target[k.as_str()],
                PathStep::Index(n) => &mut target[*n],
            };
        }
        match (e, last, target) {
            (JsonEdit::Replace(_, v), PathStep::Key(k), t) => t[k.as_str()] = v.clone(),
            (JsonEdit::Replace(_, v), PathStep::Index(n), t) => t[*n] = v.clone(),
            (JsonEdit::Remove(_), PathStep::Key(k), serde_json::Value::Object(map)) => {
                map.remove(k);
            }
            (JsonEdit::Remove(_), PathStep::Index(n), serde_json::Value::Array(items)) => {
                items.remove(*n);
            }
            _ => {}
        }
    }
    doc
}

/// A mutation of a JSON file: either its bytes or its values.
#[derive(Debug, Clone)]
pub enum JsonMutation {
    Bytes(Vec<Edit>),
    Values(Vec<JsonEdit>),
}

pub fn json_mutation() -> impl Strategy<Value = JsonMutation> {
    prop_oneof![edits().prop_map(JsonMutation::Bytes), json_edits().prop_map(JsonMutation::Values)]
}

pub fn apply_json_mutation(original: &[u8], mutation: &JsonMutation) -> Vec<u8> {
    match mutation {
        JsonMutation::Bytes(e) => apply(original, e),
        JsonMutation::Values(e) => {
            let doc: serde_json::Value = serde_json::from_slice(original).expect("the original is JSON");
            serde_json::to_vec_pretty(&apply_json(&doc, e)).expect("a JSON value serializes")
        }
    }
}
