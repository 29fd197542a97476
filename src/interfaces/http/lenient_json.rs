//! JSON as Python's `json.dumps` writes it: bare `NaN`, `Infinity` and
//! `-Infinity` tokens are legal values there, and serde_json refuses them.

use serde_json::Value;

const TOKENS: [&str; 3] = ["-Infinity", "Infinity", "NaN"];

/// Parses `text`, reading the non-finite tokens (outside strings) as the
/// strings `"NaN"`, `"Infinity"` and `"-Infinity"`; [`number`] turns them back into floats.
pub fn parse(text: &str) -> Result<Value, serde_json::Error> {
    match quote_non_finite(text) {
        Some(rewritten) => serde_json::from_str(&rewritten),
        None => serde_json::from_str(text),
    }
}

/// A metric value: a JSON number or one of the non-finite tokens.
pub fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

/// Returns a copy with the bare tokens quoted, or `None` when there are none.
fn quote_non_finite(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let (mut in_string, mut escaped, mut copied, mut i) = (false, false, 0, 0);
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
            i += 1;
            continue;
        }
        if let Some(token) = TOKENS.iter().find(|t| text[i..].starts_with(*t)) {
            let buf = out.get_or_insert_with(|| String::with_capacity(text.len() + 16));
            buf.push_str(&text[copied..i]);
            buf.push('"');
            buf.push_str(token);
            buf.push('"');
            i += token.len();
            copied = i;
            continue;
        }
        i += 1;
    }
    out.map(|mut buf| {
        buf.push_str(&text[copied..]);
        buf
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_tokens_become_floats_but_strings_are_untouched() {
        let v = parse(
            r#"{"data": {"a": NaN, "b": -Infinity, "c": Infinity, "NaN": "x NaN \" Infinity"}}"#,
        )
        .unwrap();
        let d = &v["data"];
        assert!(number(&d["a"]).unwrap().is_nan());
        assert_eq!(number(&d["b"]), Some(f64::NEG_INFINITY));
        assert_eq!(number(&d["c"]), Some(f64::INFINITY));
        assert_eq!(d["NaN"], "x NaN \" Infinity");
    }

    #[test]
    fn plain_json_is_parsed_as_is() {
        assert_eq!(number(&parse("1e-05").unwrap()), Some(1e-5));
        assert!(parse("{\"a\": NaNx}").is_err());
    }
}
