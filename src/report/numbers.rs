//! Numbers as a report prints them, in tables and on chart axes.

/// A number for reading: six significant digits, exponent outside 1e-4..1e6.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v == 0.0 {
        return "0".into();
    }
    let magnitude = v.abs().log10().floor() as i32;
    if !(-4..6).contains(&magnitude) {
        return format!("{v:.4e}");
    }
    let decimals = (5 - magnitude).clamp(0, 9) as usize;
    let text = format!("{v:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// A tick label: three significant digits are plenty on an axis.
pub fn tick(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return number(v);
    }
    let magnitude = v.abs().log10().floor() as i32;
    let scale = 10f64.powi(magnitude - 2);
    number((v / scale).round() * scale)
}
