//! Deep merge of JSON configs for `inherit_config`.

use serde_json::{Map, Value};

/// Merges `overlay` onto `base`: nested objects merge recursively, and at every
/// other leaf the overlay's value wins (arrays are leaves, not concatenated).
pub fn deep_merge(base: &Map<String, Value>, overlay: &Map<String, Value>) -> Map<String, Value> {
    let mut out = base.clone();
    for (key, value) in overlay {
        let merged = match (out.get(key), value) {
            (Some(Value::Object(b)), Value::Object(o)) => Value::Object(deep_merge(b, o)),
            _ => value.clone(),
        };
        out.insert(key.clone(), merged);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn nested_objects_merge_and_child_wins_at_leaves() {
        let base =
            obj(json!({"lr": 0.1, "opt": {"name": "adam", "betas": [0.9, 0.99]}, "seed": 1}));
        let child = obj(json!({"lr": 0.01, "opt": {"betas": [0.8]}, "extra": true}));
        assert_eq!(
            Value::Object(deep_merge(&base, &child)),
            json!({"lr": 0.01, "opt": {"name": "adam", "betas": [0.8]}, "seed": 1, "extra": true})
        );
    }

    #[test]
    fn object_replaces_scalar_and_back() {
        let base = obj(json!({"a": 1, "b": {"c": 2}}));
        let child = obj(json!({"a": {"x": 1}, "b": 3}));
        assert_eq!(
            Value::Object(deep_merge(&base, &child)),
            json!({"a": {"x": 1}, "b": 3})
        );
    }
}
