//! NDJSON bodies of the SDK's ingest requests and the fields every line shares.
//!
//! A line's size is checked before it is parsed, and lines are parsed one at a
//! time, so a request holds at most one line's JSON tree, never the whole body's.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::ingest::limits::{TIME_WINDOW, ms_in_window};
use crate::interfaces::http::lenient_json;

/// One line's JSON object.
pub(super) type Object = Map<String, Value>;

/// Calls `each` with every non-empty line (1-based number, trimmed text), in
/// order; stops at the first error, which names the line.
pub(super) fn lines<'a>(
    body: &'a [u8],
    max_line_bytes: usize,
    limit_name: &str,
    mut each: impl FnMut(usize, &'a str) -> Result<()>,
) -> Result<()> {
    let text =
        std::str::from_utf8(body).map_err(|_| Error::invalid("request body is not UTF-8"))?;
    for (i, line) in text.split('\n').enumerate() {
        let number = i + 1;
        if line.len() > max_line_bytes {
            return Err(Error::invalid(format!(
                "line {number}: {} bytes is over the limit of {max_line_bytes} bytes per line ({limit_name})",
                line.len()
            )));
        }
        let line = line.trim();
        if !line.is_empty() {
            each(number, line)?;
        }
    }
    Ok(())
}

/// As [`lines`], with each line parsed as a JSON object.
pub(super) fn for_each_line(
    body: &[u8],
    max_line_bytes: usize,
    limit_name: &str,
    mut each: impl FnMut(usize, Object) -> Result<()>,
) -> Result<()> {
    lines(
        body,
        max_line_bytes,
        limit_name,
        |number, line| match lenient_json::parse(line) {
            Ok(Value::Object(obj)) => each(number, obj),
            Ok(_) => Err(Error::invalid(format!(
                "line {number}: expected a JSON object"
            ))),
            Err(e) => Err(Error::invalid(format!("line {number}: invalid JSON: {e}"))),
        },
    )
}

/// A value for an error message, cut short: the value may be a megabyte of text.
pub(super) fn shown(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// `time` in epoch milliseconds (int or float), as microseconds; `None` when
/// absent or null (the server's clock then).
pub(super) fn time_us(line: usize, time: Option<&Value>) -> Result<Option<i64>> {
    let v = match time {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    let ms = v.as_f64().ok_or_else(|| {
        Error::invalid(format!(
            "line {line}: time must be epoch milliseconds, got {}",
            shown(v)
        ))
    })?;
    ms_in_window(ms).map(Some).ok_or_else(|| {
        Error::invalid(format!(
            "line {line}: time {v} (epoch milliseconds) is outside {TIME_WINDOW}"
        ))
    })
}

/// `step`, an integer ≥ 0 (0 when absent or null).
pub(super) fn step(line: usize, step: Option<&Value>) -> Result<u64> {
    match step {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v
            .as_u64()
            .filter(|s| *s <= i64::MAX as u64)
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 9.2e18)
                    .map(|f| f as u64)
            })
            .ok_or_else(|| {
                Error::invalid(format!(
                    "line {line}: step must be an integer ≥ 0, got {}",
                    shown(v)
                ))
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::limits::{MAX_TIME_US, MIN_TIME_US};
    use proptest::prelude::*;

    fn lines(body: &[u8], max: usize) -> Result<Vec<(usize, Object)>> {
        let mut out = Vec::new();
        for_each_line(body, max, "LIMIT", |n, obj| {
            out.push((n, obj));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn over_long_lines_are_refused_by_number_before_parsing() {
        let body = format!("{{\"a\": 1}}\n\n{}\n", "x".repeat(100));
        let err = lines(body.as_bytes(), 64).unwrap_err().to_string();
        assert!(
            err.contains("line 3: 100 bytes is over the limit of 64"),
            "{err}"
        );
        assert!(err.contains("LIMIT"), "{err}");
        assert_eq!(lines(b"{\"a\": 1}\n\n{\"b\": 2}", 64).unwrap().len(), 2);
    }

    #[test]
    fn times_outside_the_window_are_refused_and_edges_kept() {
        let time = |v: Value| time_us(7, Some(&v));
        for bad in [
            serde_json::json!(1e300),
            serde_json::json!(-1),
            serde_json::json!(9.2e15),
            serde_json::json!(-9.2e15),
            serde_json::json!(7_258_118_400_000_i64),
            serde_json::json!(u64::MAX),
        ] {
            let err = time(bad.clone()).unwrap_err().to_string();
            assert!(
                err.starts_with("line 7: time") && err.contains("outside"),
                "{bad}: {err}"
            );
        }
        assert_eq!(time(serde_json::json!(0)).unwrap(), Some(0));
        assert_eq!(
            time(serde_json::json!(7_258_118_399_999_i64)).unwrap(),
            Some(MAX_TIME_US - 1000)
        );
        assert_eq!(time(Value::Null).unwrap(), None);
    }

    #[test]
    fn multi_byte_text_outside_strings_is_a_clean_error() {
        let err = lines("{\"step\":5,\"data\":{\"a\":1}} é".as_bytes(), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("line 1: invalid JSON"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bodies_never_panic(body in prop::collection::vec(
            prop_oneof![
                any::<u8>(),
                Just(b'\n'),
                Just(b'{'),
                Just(b'}'),
                Just(b'"'),
                Just(b':'),
            ],
            0..200,
        )) {
            let _ = for_each_line(&body, 64, "LIMIT", |n, obj| {
                let _ = (time_us(n, obj.get("time")), step(n, obj.get("step")));
                Ok(())
            });
        }

        #[test]
        fn arbitrary_numbers_for_time_and_step_never_panic(t in any::<f64>(), s in any::<f64>(), i in any::<i64>()) {
            for v in [serde_json::json!(t), serde_json::json!(i)] {
                if let Ok(Some(us)) = time_us(1, Some(&v)) {
                    prop_assert!((MIN_TIME_US..MAX_TIME_US).contains(&us));
                }
                let _ = step(1, Some(&v));
            }
            let _ = step(1, Some(&serde_json::json!(s)));
        }
    }
}
