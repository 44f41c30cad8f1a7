//! The body of `POST /v1/classify`, read and checked before any of it runs: `{"text": INPUT}` (one input, answered
//! with one object) or `{"texts": [INPUT, …]}` (answered with `{"answers": […]}`). An INPUT is a string, taken as
//! one line of the CLI's input is (for a pair task `first<TAB>second`), or an array of two strings, a pair.
//! Refusing the whole request before running any of it means a caller never pays for part of a batch it must
//! resend anyway.

use super::error::ApiError;
use super::Limits;
use crate::tokenize::{Input, TextTokenizer};
use axum::http::StatusCode;
use serde_json::Value;

/// One input of a request, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A line: one text, or `first<TAB>second` for a pair task.
    Line(String),
    Pair(String, String),
}

impl Item {
    pub fn input(&self, pair_task: bool) -> Input<'_> {
        match self {
            Self::Line(line) => Input::from_line(line, pair_task),
            Self::Pair(a, b) => Input::pair(a, b),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Self::Line(line) => line.len(),
            Self::Pair(a, b) => a.len() + b.len(),
        }
    }
}

/// A request's inputs, and whether they came as one (`text`) or as a list (`texts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifyRequest {
    pub items: Vec<Item>,
    pub batch: bool,
}

const SHAPE: &str = "expected a JSON object with `text` (one input) or `texts` (a list of inputs); an input is a \
                     string, or an array of two strings for a sentence pair";

/// Parses and checks a body: JSON syntax (400), shape (422), sizes (413), then every input against the model
/// (422: empty, whitespace only, a pair where the model takes one text or the reverse).
pub fn parse(body: &[u8], limits: &Limits, tokenizer: &TextTokenizer) -> Result<ClassifyRequest, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("request body is not valid JSON: {e}")))?;
    let Value::Object(mut object) = value else { return Err(ApiError::unprocessable(SHAPE)) };
    if let Some(key) = object.keys().find(|k| *k != "text" && *k != "texts") {
        return Err(ApiError::unprocessable(format!("unknown field `{key}`: {SHAPE}")));
    }
    let request = match (object.remove("text"), object.remove("texts")) {
        (Some(one), None) => ClassifyRequest { items: vec![item(one).map_err(|e| e.about_input(1))?], batch: false },
        (None, Some(Value::Array(list))) => {
            if list.is_empty() {
                return Err(ApiError::unprocessable("`texts` is empty: nothing to classify"));
            }
            if list.len() > limits.max_texts {
                return Err(ApiError::too_large(format!(
                    "{} texts in one request, more than the limit of {}",
                    list.len(),
                    limits.max_texts
                )));
            }
            let items = list
                .into_iter()
                .enumerate()
                .map(|(i, v)| item(v).map_err(|e| e.about_input(i + 1)))
                .collect::<Result<_, _>>()?;
            ClassifyRequest { items, batch: true }
        }
        (None, Some(_)) => return Err(ApiError::unprocessable(format!("`texts` is not a list: {SHAPE}"))),
        (Some(_), Some(_)) => return Err(ApiError::unprocessable(format!("both `text` and `texts`: {SHAPE}"))),
        (None, None) => return Err(ApiError::unprocessable(SHAPE)),
    };
    for (i, it) in request.items.iter().enumerate() {
        let number = i + 1;
        if it.bytes() > limits.max_text_bytes {
            return Err(ApiError::too_large(format!(
                "input of {} bytes is longer than the limit of {} bytes per input",
                it.bytes(),
                limits.max_text_bytes
            ))
            .about_input(number));
        }
        tokenizer
            .check(&it.input(tokenizer.is_pair_task()))
            .map_err(|e| ApiError::unprocessable(e.to_string()).about_input(number))?;
    }
    Ok(request)
}

fn item(value: Value) -> Result<Item, ApiError> {
    match value {
        Value::String(line) => Ok(Item::Line(line)),
        Value::Array(parts) => match <[Value; 2]>::try_from(parts) {
            Ok([Value::String(a), Value::String(b)]) => Ok(Item::Pair(a, b)),
            _ => Err(ApiError::unprocessable(format!("an array input must hold exactly two strings: {SHAPE}"))),
        },
        _ => Err(ApiError::unprocessable(format!("an input must be a string or a pair of strings: {SHAPE}"))),
    }
}
