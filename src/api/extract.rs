//! Shared request extractors: JSON object bodies with a field allow-list, query pairs, and the
//! typed fields and limits every handler reads the same way (with the same error codes).

use serde_json::{Map, Value};

use super::error::{ApiError, Code};
use crate::domain::validate;

/// Parses a JSON object body, rejecting unknown fields.
pub fn object_body(body: &[u8], allowed: &[&str]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            Code::BodyInvalidJson,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(map) = v else {
        return Err(ApiError::new(
            Code::BodyInvalidJson,
            "the body must be a JSON object",
        ));
    };
    if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            Code::ParameterUnknown,
            k,
            format!("unknown parameter: {k}"),
        ));
    }
    Ok(map)
}

/// An optional string field of at most `max` bytes.
pub fn opt_string(
    map: &Map<String, Value>,
    field: &str,
    max: usize,
) -> Result<Option<String>, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            validate::text(field, s, max)?;
            Ok(Some(s.clone()))
        }
        Some(_) => Err(ApiError::invalid(
            Code::ParameterInvalid,
            field,
            format!("{field} must be a string"),
        )),
    }
}

/// `limit=` of a list: 1 to 100.
pub fn parse_limit(v: &str) -> Result<usize, ApiError> {
    v.parse::<usize>()
        .ok()
        .filter(|l| (1..=100).contains(l))
        .ok_or_else(|| ApiError::invalid(Code::ParameterInvalid, "limit", "limit must be 1 to 100"))
}

/// Reads a string field of an operator's JSON body.
pub fn body_str<'a>(map: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(ApiError::invalid(
            Code::ParameterInvalid,
            field,
            format!("{field} must be a string"),
        )),
    }
}

/// Parses `a=1&b=2` into pairs, rejecting parameters not in `allowed`.
pub fn query_pairs(query: &str, allowed: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if !allowed.contains(&k.as_ref()) {
            return Err(ApiError::invalid(
                Code::ParameterUnknown,
                &k,
                format!("unknown query parameter: {k}"),
            ));
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
}
