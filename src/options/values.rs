//! Parsers of option values shared by several groups (clap `value_parser`s).

use std::time::Duration;

/// A timeout in seconds: more than 0, at most a day.
pub(super) fn timeout_seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds <= 86_400.0 => Ok(seconds),
        _ => Err(format!("expected seconds in (0, 86400], got `{text}`")),
    }
}

/// `--store-retry-s`: more than 0, at most an hour.
pub(super) fn retry_seconds(text: &str) -> Result<f64, String> {
    let seconds = text
        .trim()
        .parse::<f64>()
        .map_err(|_| format!("expected seconds, got `{text}`"))?;
    if seconds > 0.0 && seconds <= 3600.0 {
        Ok(seconds)
    } else {
        Err(format!("expected seconds in (0, 3600], got {seconds}"))
    }
}

/// A duration: plain seconds (`900`, `0.5`) or humantime's (`15m`, `1h 30m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let duration = match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && (0.0..=1e9).contains(&seconds) => {
            Duration::from_secs_f64(seconds)
        }
        Ok(_) => return Err(format!("expected a duration ≥ 0, got `{text}`")),
        Err(_) => humantime::parse_duration(text)
            .map_err(|e| format!("expected seconds or a duration like 15m, got `{text}`: {e}"))?,
    };
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("900"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("900s"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("NaN").is_err());
    }

    #[test]
    fn seconds() {
        assert_eq!(retry_seconds("15"), Ok(15.0));
        assert!(retry_seconds("0").is_err());
        assert!(retry_seconds("3601").is_err());
        assert_eq!(timeout_seconds("0.5"), Ok(0.5));
        assert!(timeout_seconds("0").is_err());
        assert!(timeout_seconds("86401").is_err());
    }
}
