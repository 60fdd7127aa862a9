//! Form-encoded bodies (`application/x-www-form-urlencoded`) with Stripe's bracket notation,
//! read into the same JSON value a JSON client sends: `metadata[order_id]=ORD-1` is
//! `{"metadata": {"order_id": "ORD-1"}}`, `payment_methods[0]=upi` (or `payment_methods[]=upi`)
//! is `{"payment_methods": ["upi"]}`. Stripe's official libraries send every POST this way; the
//! handlers then validate one value whatever the encoding, so errors and the idempotency
//! fingerprint cannot differ between the two.

use serde_json::{Map, Value};

/// Brackets deeper than this are refused: Stripe's own parameters nest at most three levels,
/// and the value is parsed again as JSON (whose parser stops at 128 levels).
pub const MAX_DEPTH: usize = 5;

/// Why a form body cannot be read; each names the offending key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormError {
    #[error("the form body is not valid UTF-8 once percent-decoded")]
    NotUtf8,
    #[error("the form body has a parameter with an empty name")]
    EmptyName,
    #[error("{0:?} is not a valid parameter name (brackets must pair up: a[b][0])")]
    BadName(String),
    #[error("{0:?} nests deeper than {MAX_DEPTH} levels")]
    TooDeep(String),
    #[error("{0:?}: array indexes must count up from 0 without gaps")]
    BadIndex(String),
    #[error("{0:?} is given twice or as both a value and an object/array")]
    Conflict(String),
}

impl FormError {
    /// The parameter the error is about, for the error's `param`.
    pub fn param(&self) -> Option<&str> {
        match self {
            FormError::BadName(k)
            | FormError::TooDeep(k)
            | FormError::BadIndex(k)
            | FormError::Conflict(k) => Some(k),
            FormError::NotUtf8 | FormError::EmptyName => None,
        }
    }
}

/// Whether a request's Content-Type says the body is a form.
pub fn is_form(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        ct.split(';').next().is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    })
}

/// One `+`/percent-decoded component, refusing invalid UTF-8 (JSON would refuse it too).
pub fn decode(part: &str) -> Result<String, FormError> {
    let spaced = part.replace('+', " ");
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(&spaced).collect();
    String::from_utf8(bytes).map_err(|_| FormError::NotUtf8)
}

/// Splits `a[b][0]` into `["a", "b", "0"]`; `a[]` gives an empty last segment (append).
fn segments(name: &str) -> Result<Vec<&str>, FormError> {
    let bad = || FormError::BadName(name.to_owned());
    let (head, mut rest) = match name.find('[') {
        Some(i) => (&name[..i], &name[i..]),
        None => (name, ""),
    };
    if head.is_empty() || head.contains(']') {
        return Err(bad());
    }
    let mut out = vec![head];
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[').ok_or_else(bad)?;
        let close = inner.find(']').ok_or_else(bad)?;
        let seg = &inner[..close];
        if seg.contains('[') {
            return Err(bad());
        }
        out.push(seg);
        rest = &inner[close + 1..];
    }
    if out.len() > MAX_DEPTH {
        return Err(FormError::TooDeep(name.to_owned()));
    }
    Ok(out)
}

/// Puts `value` at `path` under `node`, creating objects and arrays on the way.
fn insert(node: &mut Value, path: &[&str], value: String, name: &str) -> Result<(), FormError> {
    let conflict = || FormError::Conflict(name.to_owned());
    let Some((first, rest)) = path.split_first() else {
        return Err(conflict());
    };
    // What the next level must be: an array when the segment is an index or `[]`.
    let child_is_array = rest
        .first()
        .is_some_and(|s| s.is_empty() || s.bytes().all(|b| b.is_ascii_digit()));
    let fresh = |last: bool| {
        if last {
            Value::Null
        } else if child_is_array {
            Value::Array(Vec::new())
        } else {
            Value::Object(Map::new())
        }
    };
    let slot: &mut Value = match node {
        Value::Object(map) => {
            if first.is_empty() {
                return Err(FormError::BadName(name.to_owned()));
            }
            map.entry((*first).to_owned())
                .or_insert_with(|| fresh(rest.is_empty()))
        }
        Value::Array(items) => {
            let index = if first.is_empty() {
                items.len()
            } else {
                first
                    .parse::<usize>()
                    .ok()
                    .filter(|i| *i <= items.len())
                    .ok_or_else(|| FormError::BadIndex(name.to_owned()))?
            };
            if index == items.len() {
                items.push(fresh(rest.is_empty()));
            } else if rest.is_empty() {
                // `a[0]=x&a[0]=y`: the same element twice.
                return Err(conflict());
            }
            &mut items[index]
        }
        _ => return Err(conflict()),
    };
    if rest.is_empty() {
        if !slot.is_null() {
            return Err(conflict());
        }
        *slot = Value::String(value);
        return Ok(());
    }
    match (slot, child_is_array) {
        (s @ Value::Array(_), true) | (s @ Value::Object(_), false) => insert(s, rest, value, name),
        // An object keyed by digits (`metadata[0]=x`) once the key exists as an object.
        (s @ Value::Object(_), true) if !rest[0].is_empty() => insert(s, rest, value, name),
        _ => Err(conflict()),
    }
}

/// Reads a whole form body into a JSON object of strings, arrays and objects. Values stay
/// strings: which ones are numbers is the endpoint's business (see `stripe::coerce`).
pub fn parse(body: &[u8]) -> Result<Map<String, Value>, FormError> {
    let text = std::str::from_utf8(body).map_err(|_| FormError::NotUtf8)?;
    let mut root = Value::Object(Map::new());
    for pair in text.split('&').filter(|p| !p.trim().is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(k.trim_start_matches(['\r', '\n']))?;
        if name.is_empty() {
            return Err(FormError::EmptyName);
        }
        let value = decode(v.trim_end_matches(['\r', '\n']))?;
        let path = segments(&name)?;
        insert(&mut root, &path, value, &name)?;
    }
    match root {
        Value::Object(m) => Ok(m),
        _ => Ok(Map::new()),
    }
}

/// The value with every object's keys in sorted order, so equal values serialise to equal bytes
/// whatever order the client sent them in (the idempotency fingerprint hashes these bytes).
pub fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                out.insert(k.clone(), canonical(&m[k]));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// The bytes the idempotency fingerprint hashes: the canonical JSON of a body that is JSON,
/// else the body as sent (it will be refused anyway).
pub fn fingerprint_bytes(body: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return std::borrow::Cow::Borrowed(b"{}");
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => std::borrow::Cow::Owned(serde_json::to_vec(&canonical(&v)).unwrap_or_default()),
        Err(_) => std::borrow::Cow::Borrowed(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &str) -> Result<Value, FormError> {
        parse(s.as_bytes()).map(Value::Object)
    }

    #[test]
    fn brackets_become_objects_and_arrays() {
        assert_eq!(
            p("amount=14999&currency=inr&metadata[order_id]=ORD-1&payment_method_types[0]=upi&payment_method_types[1]=usdt_local").unwrap(),
            json!({"amount": "14999", "currency": "inr", "metadata": {"order_id": "ORD-1"},
                   "payment_method_types": ["upi", "usdt_local"]})
        );
        assert_eq!(
            p("expand[]=a&expand[]=b").unwrap(),
            json!({"expand": ["a", "b"]})
        );
        assert_eq!(
            p("items[0][name]=x&items[0][qty]=2&items[1][name]=y").unwrap(),
            json!({"items": [{"name": "x", "qty": "2"}, {"name": "y"}]})
        );
    }

    #[test]
    fn percent_and_plus_decode_as_browsers_send_them() {
        assert_eq!(
            p("description=Two+shirts%20%26+a+hat&metadata%5Bk%C3%A9y%5D=%E2%82%B9").unwrap(),
            json!({"description": "Two shirts & a hat", "metadata": {"kéy": "₹"}})
        );
        assert_eq!(p("").unwrap(), json!({}));
        assert_eq!(p("a=").unwrap(), json!({"a": ""}));
    }

    #[test]
    fn hostile_forms_are_refused_with_the_key_named() {
        assert_eq!(p("a=1&a=2"), Err(FormError::Conflict("a".into())));
        assert_eq!(
            p("metadata=x&metadata[k]=y"),
            Err(FormError::Conflict("metadata[k]".into()))
        );
        assert_eq!(
            p("metadata[k]=y&metadata=x"),
            Err(FormError::Conflict("metadata".into()))
        );
        assert_eq!(
            p("a[5]=x"),
            Err(FormError::BadIndex("a[5]".into())),
            "a sparse index must not allocate"
        );
        assert_eq!(
            p("a[99999999999999999999]=x"),
            Err(FormError::BadIndex("a[99999999999999999999]".into()))
        );
        assert_eq!(p("a[b=x"), Err(FormError::BadName("a[b".into())));
        assert_eq!(p("a]=x"), Err(FormError::BadName("a]".into())));
        assert_eq!(p("[a]=x"), Err(FormError::BadName("[a]".into())));
        assert_eq!(p("a[b]c=x"), Err(FormError::BadName("a[b]c".into())));
        assert_eq!(p("=x"), Err(FormError::EmptyName));
        assert_eq!(p("a=%FF"), Err(FormError::NotUtf8));
        assert!(matches!(
            p("a[b][c][d][e][f]=x"),
            Err(FormError::TooDeep(_))
        ));
        assert!(p("a[0]=x&a[k]=y").is_err());
        assert!(p("a[]=x&a[0]=y").is_err(), "the same element twice");
    }

    #[test]
    fn canonical_bytes_ignore_key_order_and_spacing() {
        let a = fingerprint_bytes(br#"{"currency":"inr","amount":1,"metadata":{"b":"1","a":"2"}}"#);
        let b = fingerprint_bytes(
            br#"{ "amount": 1, "metadata": {"a":"2","b":"1"}, "currency": "inr" }"#,
        );
        assert_eq!(a, b);
        assert_eq!(fingerprint_bytes(b"  "), fingerprint_bytes(b"{}"));
        assert_eq!(&*fingerprint_bytes(b"not json"), b"not json");
    }
}
