//! JSON as Python's `json.dumps` writes it: bare `NaN`, `Infinity` and
//! `-Infinity` tokens are legal values there, and serde_json refuses them.

use serde_json::Value;

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
///
/// Ingest runs this over every line, so it jumps between the only bytes that
/// matter (quotes, backslashes in strings, and the `N` / `I` that every token
/// holds) instead of looking at each byte.
pub fn quote_non_finite(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    // Every token holds an `N` or an `I`.
    memchr::memchr2(b'N', b'I', bytes)?;
    let mut out: Option<String> = None;
    let (mut copied, mut i) = (0, 0);
    while let Some(found) = memchr::memchr3(b'"', b'N', b'I', &bytes[i..]) {
        let at = i + found;
        if bytes[at] == b'"' {
            i = string_end(bytes, at + 1);
            continue;
        }
        let token = if bytes[at..].starts_with(b"NaN") {
            Some((at, "NaN"))
        } else if bytes[at..].starts_with(b"Infinity") {
            // A `-` right before belongs to the token; it cannot sit inside
            // a string (the `I` would too) nor inside the last token copied.
            if at > 0 && bytes[at - 1] == b'-' {
                Some((at - 1, "-Infinity"))
            } else {
                Some((at, "Infinity"))
            }
        } else {
            None
        };
        match token {
            Some((start, token)) => {
                let buf = out.get_or_insert_with(|| String::with_capacity(text.len() + 16));
                buf.push_str(&text[copied..start]);
                buf.push('"');
                buf.push_str(token);
                buf.push('"');
                i = start + token.len();
                copied = i;
            }
            None => i = at + 1,
        }
    }
    out.map(|mut buf| {
        buf.push_str(&text[copied..]);
        buf
    })
}

/// The index just past the quote that closes a string whose text starts at
/// `from`, or the end of `bytes` when it is not closed (the parser refuses it).
fn string_end(bytes: &[u8], mut from: usize) -> usize {
    while let Some(found) = memchr::memchr2(b'"', b'\\', &bytes[from..]) {
        let at = from + found;
        if bytes[at] == b'"' {
            return at + 1;
        }
        // A backslash escapes the byte after it, whatever it is.
        from = at + 2;
        if from >= bytes.len() {
            break;
        }
    }
    bytes.len()
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

    #[test]
    fn multi_byte_characters_outside_strings_are_an_error_not_a_panic() {
        for text in [
            "{\"step\":5,\"data\":{\"a\":1}} é",
            "é",
            "{\"a\": NaN} 日本",
            "{\"a\": 1é}",
            "[NaN, \"é\", é]",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
        assert_eq!(parse("{\"é\": \"NaN é\"}").unwrap()["é"], "NaN é");
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        const TOKENS: [&str; 3] = ["-Infinity", "Infinity", "NaN"];

        /// The scanner as first written, a byte at a time: the reference for
        /// the one that jumps.
        fn byte_by_byte(text: &str) -> Option<String> {
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
                // Bytes, not `text[i..]`: `i` may sit inside a multi-byte character
                // outside any string (invalid JSON, refused by the parser below).
                if let Some(token) = TOKENS.iter().find(|t| bytes[i..].starts_with(t.as_bytes())) {
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

        /// JSON-ish text: the grammar's punctuation, the tokens, and arbitrary characters.
        fn jsonish() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                Just("{".to_string()),
                Just("}".to_string()),
                Just("[".to_string()),
                Just("]".to_string()),
                Just(":".to_string()),
                Just(",".to_string()),
                Just("\"".to_string()),
                Just("\\".to_string()),
                Just("NaN".to_string()),
                Just("-Infinity".to_string()),
                Just("Infinity".to_string()),
                Just("-".to_string()),
                Just("Infinit".to_string()),
                Just("1e308".to_string()),
                any::<char>().prop_map(String::from),
                "[a-z0-9é日]{0,4}",
            ];
            prop::collection::vec(piece, 0..40).prop_map(|p| p.concat())
        }

        /// Valid JSON with non-finite tokens, then one edit at an arbitrary place.
        fn mutated() -> impl Strategy<Value = String> {
            let value = prop_oneof![
                Just("NaN".to_string()),
                Just("-Infinity".to_string()),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(|f| f.to_string()),
                "\"[^\"\\\\]{0,6}\"",
            ];
            (
                prop::collection::vec(("[a-zé]{1,4}", value), 0..6),
                any::<prop::sample::Index>(),
                any::<char>(),
                0..3u8,
            )
                .prop_map(|(fields, at, c, edit)| {
                    let body: Vec<String> = fields
                        .iter()
                        .map(|(k, v)| format!("\"{k}\": {v}"))
                        .collect();
                    let mut text = format!("{{\"data\": {{{}}}}}", body.join(", "));
                    let at = text.floor_char_boundary(at.index(text.len() + 1));
                    match edit {
                        0 => text.insert(at, c),
                        1 => text.truncate(at),
                        _ => {
                            let end = text.ceil_char_boundary(at + 1);
                            text.replace_range(at..end, "");
                        }
                    }
                    text
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn arbitrary_text_never_panics(text in jsonish()) {
                let _ = parse(&text);
                prop_assert_eq!(quote_non_finite(&text), byte_by_byte(&text));
            }

            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
                let _ = parse(&String::from_utf8_lossy(&bytes));
            }

            #[test]
            fn mutated_json_parses_or_errs(text in mutated()) {
                prop_assert_eq!(quote_non_finite(&text), byte_by_byte(&text));
                if let Ok(value) = parse(&text) {
                    // What parses is JSON once the bare tokens are quoted.
                    prop_assert!(serde_json::to_string(&value).is_ok());
                }
            }
        }
    }
}
