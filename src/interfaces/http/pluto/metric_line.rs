//! A metrics line read straight into what ingest needs: metric names are
//! borrowed from the request body (copied only where they hold escapes) and
//! values read as numbers, with no JSON tree built for the line.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::interfaces::http::lenient_json;

/// One line, `{"time": ms, "step": n, "data": {name: number}}`; other fields
/// are ignored, and of a repeated field the last one counts.
#[derive(Default)]
pub(super) struct MetricLine<'a> {
    pub(super) time: Option<Value>,
    pub(super) step: Option<Value>,
    /// `None` when absent or not an object.
    pub(super) data: Option<Vec<(Cow<'a, str>, Reading)>>,
}

/// A metric's value as logged.
pub(super) enum Reading {
    Number(f64),
    /// `None` in Python: the line's other values are kept.
    Null,
    /// Anything else, kept for the error message.
    Other(Value),
}

/// Parses line `number` (Python's bare `NaN` and `±Infinity` allowed) and
/// hands it to `each`.
pub(super) fn parse<R>(
    number: usize,
    text: &str,
    each: impl FnOnce(MetricLine<'_>) -> Result<R>,
) -> Result<R> {
    let rewritten = lenient_json::quote_non_finite(text);
    match serde_json::from_str::<MetricLine>(rewritten.as_deref().unwrap_or(text)) {
        Ok(line) => each(line),
        Err(e) if e.is_data() => Err(Error::invalid(format!(
            "line {number}: expected a JSON object"
        ))),
        Err(e) => Err(Error::invalid(format!("line {number}: invalid JSON: {e}"))),
    }
}

impl<'de> Deserialize<'de> for MetricLine<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Line;
        impl<'de> Visitor<'de> for Line {
            type Value = MetricLine<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut line = MetricLine::default();
                while let Some(Name(key)) = map.next_key()? {
                    match &*key {
                        "time" => line.time = Some(map.next_value()?),
                        "step" => line.step = Some(map.next_value()?),
                        "data" => line.data = map.next_value::<Data>()?.0,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(line)
            }
        }
        d.deserialize_map(Line)
    }
}

/// A key, borrowed from the text unless it holds escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> std::result::Result<Self::Value, E> {
                Ok(Name(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Text)
    }
}

/// Of repeated names, keeps the last pair, as a JSON object keeps the last
/// value of a repeated key (in linear time: a line may hold many names).
fn keep_last_of_each(pairs: &mut Vec<(Cow<'_, str>, Reading)>) {
    let n = pairs.len();
    let repeated = if n <= 16 {
        (0..n).any(|i| pairs[i + 1..].iter().any(|(k, _)| *k == pairs[i].0))
    } else {
        let mut seen = HashSet::with_capacity(n);
        !pairs.iter().all(|(k, _)| seen.insert(k))
    };
    if !repeated {
        return;
    }
    let mut keep = vec![false; n];
    {
        let mut seen = HashSet::with_capacity(n);
        for i in (0..n).rev() {
            keep[i] = seen.insert(&*pairs[i].0);
        }
    }
    let mut next = keep.into_iter();
    pairs.retain(|_| next.next().unwrap_or(true));
}

/// `data`: its `(name, value)` pairs when it is an object, `None` otherwise.
struct Data<'a>(Option<Vec<(Cow<'a, str>, Reading)>>);

impl<'de> Deserialize<'de> for Data<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Values;
        type Out<'de, E> = std::result::Result<Data<'de>, E>;
        impl<'de> Visitor<'de> for Values {
            type Value = Data<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Out<'de, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Name(name)) = map.next_key()? {
                    pairs.push((name, map.next_value()?));
                }
                keep_last_of_each(&mut pairs);
                Ok(Data(Some(pairs)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Out<'de, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Data(None))
            }
            fn visit_bool<E>(self, _: bool) -> Out<'de, E> {
                Ok(Data(None))
            }
            fn visit_i64<E>(self, _: i64) -> Out<'de, E> {
                Ok(Data(None))
            }
            fn visit_u64<E>(self, _: u64) -> Out<'de, E> {
                Ok(Data(None))
            }
            fn visit_f64<E>(self, _: f64) -> Out<'de, E> {
                Ok(Data(None))
            }
            fn visit_str<E>(self, _: &str) -> Out<'de, E> {
                Ok(Data(None))
            }
            fn visit_unit<E>(self) -> Out<'de, E> {
                Ok(Data(None))
            }
        }
        d.deserialize_any(Values)
    }
}

impl<'de> Deserialize<'de> for Reading {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Any;
        type Out<E> = std::result::Result<Reading, E>;
        impl<'de> Visitor<'de> for Any {
            type Value = Reading;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_i64<E>(self, v: i64) -> Out<E> {
                Ok(Reading::Number(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Out<E> {
                Ok(Reading::Number(v as f64))
            }
            fn visit_f64<E>(self, v: f64) -> Out<E> {
                Ok(Reading::Number(v))
            }
            fn visit_unit<E>(self) -> Out<E> {
                Ok(Reading::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Out<E> {
                Ok(Reading::Other(Value::Bool(v)))
            }
            fn visit_str<E>(self, v: &str) -> Out<E> {
                let text = Value::String(v.to_owned());
                Ok(lenient_json::number(&text).map_or(Reading::Other(text), Reading::Number))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Out<A::Error> {
                Value::deserialize(MapAccessDeserializer::new(map)).map(Reading::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Out<A::Error> {
                Value::deserialize(SeqAccessDeserializer::new(seq)).map(Reading::Other)
            }
        }
        d.deserialize_any(Any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line as the JSON tree the handler once read, for comparison.
    fn as_tree(text: &str) -> Option<Vec<(String, Option<f64>)>> {
        let Ok(Value::Object(obj)) = lenient_json::parse(text) else {
            return None;
        };
        let Some(Value::Object(data)) = obj.get("data") else {
            return Some(vec![]);
        };
        Some(
            data.iter()
                .map(|(k, v)| (k.clone(), lenient_json::number(v)))
                .collect(),
        )
    }

    fn as_line(text: &str) -> Option<Vec<(String, Option<f64>)>> {
        parse(1, text, |line| {
            let mut pairs: Vec<(String, Option<f64>)> = line
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        Reading::Number(n) => Some(n),
                        _ => None,
                    };
                    (k.into_owned(), v)
                })
                .collect();
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(pairs)
        })
        .ok()
    }

    #[test]
    fn reads_what_the_json_tree_reads() {
        // Enough names for the hashed check of repeats.
        let many = format!(
            "{{\"data\": {{{}}}}}",
            (0..40)
                .map(|i| format!("\"m{}\": {i}", i % 17))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for text in [
            r#"{"time": 1700000000000, "step": 3, "data": {"a": 1, "b/c": -2.5e3, "d": NaN, "e": -Infinity}}"#,
            r#"{"data": {"esc\"aped\u00e9": 1, "n": null, "s": "x", "o": {"k": [1]}}, "extra": [1, {"a": 2}]}"#,
            r#"{"data": {"a": 1, "a": 2}, "data": {"b": 3}}"#,
            r#"{"data": {"a": 1, "b": 2, "a": 3}}"#,
            many.as_str(),
            r#"{"data": [1, 2], "step": 1}"#,
            r#"{"step": null, "time": null}"#,
            r#"{"data": {"Infinity": Infinity, "q": "NaN"}}"#,
        ] {
            let mut tree = as_tree(text).unwrap();
            tree.sort_by(|a, b| a.0.cmp(&b.0));
            let line = as_line(text).unwrap();
            assert_eq!(format!("{tree:?}"), format!("{line:?}"), "{text}");
        }
    }

    #[test]
    fn other_json_is_refused_as_the_json_tree_refuses_it() {
        for (text, expected) in [
            ("[1, 2]", "line 1: expected a JSON object"),
            ("5", "line 1: expected a JSON object"),
            ("{\"data\": {", "line 1: invalid JSON"),
            ("{\"a\": 1} é", "line 1: invalid JSON"),
            ("{\"data\": {\"a\": NaNx}}", "line 1: invalid JSON"),
        ] {
            let err = parse(1, text, |_| Ok(())).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{text}: {err}");
        }
    }

    #[test]
    fn plain_names_are_borrowed() {
        parse(1, r#"{"data": {"train/loss": 1, "q\"": 2}}"#, |line| {
            let data = line.data.unwrap();
            assert!(matches!(data[0].0, Cow::Borrowed("train/loss")));
            assert!(matches!(data[1].0, Cow::Owned(_)));
            Ok(())
        })
        .unwrap();
    }
}
