//! Every size and range limit that protects the store from one client's input,
//! in one place (listed in `docs/http-api.md`, "Ingest limits"). Each is enforced before the
//! input is parsed into trees or committed, with an error naming the limit.

/// Longest NDJSON line of `/ingest/metrics` and `/ingest/logs`, in bytes. A line
/// is one step's metrics or one console line; a 1 MiB line already holds
/// well over 100,000 metrics. Checked before the line is parsed.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Longest NDJSON line of `/ingest/data`, in bytes: one structured value (a
/// table, a histogram) may legitimately be larger than a line of metrics.
pub const MAX_DATA_LINE_BYTES: usize = 4 << 20;

/// Most metric values one `/ingest/metrics` request may carry. Parsed points
/// cost tens of bytes each, many times their text: this bounds a request's
/// memory where the body limit alone would allow millions of tiny values.
pub const MAX_POINTS_PER_REQUEST: usize = 1_000_000;

/// Longest metric name, in bytes. Pluto's ingest sets none; this bounds the
/// dictionary of the `metric` column while leaving room for deep module paths.
pub const MAX_METRIC_NAME: usize = 1024;

/// Largest run config, in bytes of its serialized JSON, after every merge:
/// creation, fork inheritance and config updates. The runs table keeps a copy
/// of the config in every revision of a run, so a large one multiplies.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// Largest body of a run lifecycle request (`/api/runs/*`), in bytes: a config
/// at its limit, sent as an escaped JSON string, fits. Checked before parsing.
pub const MAX_RUN_BODY_BYTES: usize = 4 << 20;

/// Most tags a run may carry (after inheritance).
pub const MAX_TAGS: usize = 256;

/// Longest tag, project, run name or external id, in bytes.
pub const MAX_NAME_BYTES: usize = 512;

/// Earliest accepted point, log or file time: 1970-01-01T00:00:00Z, in µs.
pub const MIN_TIME_US: i64 = 0;

/// Latest accepted time (exclusive): 2200-01-01T00:00:00Z, in µs. Every time in
/// the window is a valid microsecond timestamp that every output renders.
pub const MAX_TIME_US: i64 = 7_258_118_400_000_000;

/// Whether `us` (microseconds since the epoch) lies in the accepted window.
pub fn time_in_window(us: i64) -> bool {
    (MIN_TIME_US..MAX_TIME_US).contains(&us)
}

/// Epoch milliseconds (as the SDK sends times) in microseconds, when finite
/// and inside the window; compared before converting, so no huge value
/// saturates into range.
pub fn ms_in_window(ms: f64) -> Option<i64> {
    let us = (ms * 1000.0).round();
    (MIN_TIME_US as f64..MAX_TIME_US as f64)
        .contains(&us)
        .then_some(us as i64)
}

/// The accepted window in words, for error messages.
pub const TIME_WINDOW: &str = "1970-01-01T00:00:00Z up to 2200-01-01T00:00:00Z";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_window_is_what_its_words_say() {
        let start = chrono::DateTime::parse_from_rfc3339("1970-01-01T00:00:00Z").unwrap();
        let end = chrono::DateTime::parse_from_rfc3339("2200-01-01T00:00:00Z").unwrap();
        assert_eq!(start.timestamp_micros(), MIN_TIME_US);
        assert_eq!(end.timestamp_micros(), MAX_TIME_US);
        assert!(time_in_window(MAX_TIME_US - 1) && !time_in_window(MAX_TIME_US));
        assert!(!time_in_window(-1));
        assert_eq!(ms_in_window(1.5), Some(1500));
        for bad in [f64::NAN, f64::INFINITY, -0.001, 1e300, 7_258_118_400_000.0] {
            assert_eq!(ms_in_window(bad), None, "{bad}");
        }
    }
}
