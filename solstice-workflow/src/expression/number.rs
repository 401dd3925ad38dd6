//! Number conversions the way GitHub's expression engine does them.

/// Converts text to a number with JavaScript's `Number(text)` rules, which GitHub's
/// coercion follows: surrounding whitespace is ignored, the empty string is `0`,
/// `0x`/`0o`/`0b` prefixes (unsigned only), decimal literals with an optional sign
/// and exponent, and `Infinity` with an optional sign. Anything else is `None`
/// (GitHub's `NaN`).
pub(crate) fn parse_js_number(text: &str) -> Option<f64> {
    let s = text.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if s.is_empty() {
        return Some(0.0);
    }
    for (prefix, radix) in [("0x", 16), ("0X", 16), ("0o", 8), ("0O", 8), ("0b", 2), ("0B", 2)] {
        if let Some(digits) = s.strip_prefix(prefix) {
            if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
                return None;
            }
            let mut value = 0f64;
            for c in digits.chars() {
                value = value * f64::from(radix) + f64::from(c.to_digit(radix)?);
            }
            return Some(value);
        }
    }
    let (sign, body) = match s.as_bytes()[0] {
        b'+' => (1.0, &s[1..]),
        b'-' => (-1.0, &s[1..]),
        _ => (1.0, s),
    };
    if body == "Infinity" {
        return Some(sign * f64::INFINITY);
    }
    if !is_decimal_literal(body) {
        return None;
    }
    body.parse::<f64>().ok().map(|v| sign * v)
}

/// Formats a number as GitHub converts it to a string (.NET's `G15` format, invariant
/// culture): up to 15 significant digits, no trailing zeros, `-0` as `0`, scientific notation
/// (`1E+15`, `1E-05`) outside 1e-4..1e15, and `NaN`, `Infinity`, `-Infinity`.
/// Whether `body` (without a sign) is a decimal literal: digits `[. digits]`
/// `[e [+-] digits]`, with at least one digit in the mantissa. Shared by the expression
/// language and the YAML reader, which accept the same grammar.
pub(crate) fn is_decimal_literal(body: &str) -> bool {
    let bytes = body.as_bytes();
    let digits_from = |mut i: usize| {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        (i, i - start)
    };
    let (mut i, mut mantissa_digits) = digits_from(0);
    if i < bytes.len() && bytes[i] == b'.' {
        let (end, fraction_digits) = digits_from(i + 1);
        i = end;
        mantissa_digits += fraction_digits;
    }
    if mantissa_digits == 0 {
        return false;
    }
    if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
        i += 1;
        if i < bytes.len() && (bytes[i] == b'+' || bytes[i] == b'-') {
            i += 1;
        }
        let (end, exponent_digits) = digits_from(i);
        if exponent_digits == 0 {
            return false;
        }
        i = end;
    }
    i == bytes.len()
}

pub(crate) fn format_number(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity".to_owned() } else { "-Infinity".to_owned() };
    }
    if value == 0.0 {
        return "0".to_owned();
    }
    // Round to 15 significant digits in scientific form, then decide the layout.
    let sci = format!("{:.14e}", value);
    let (mantissa, exponent) = match sci.split_once('e') {
        Some(parts) => parts,
        None => return sci,
    };
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let digits = digits.trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    if (-4..15).contains(&exponent) {
        if exponent < 0 {
            out.push_str("0.");
            for _ in 0..(-exponent - 1) {
                out.push('0');
            }
            out.push_str(digits);
        } else {
            let int_len = usize::try_from(exponent).unwrap_or(0) + 1;
            if digits.len() <= int_len {
                out.push_str(digits);
                for _ in digits.len()..int_len {
                    out.push('0');
                }
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('E');
        out.push(if exponent < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exponent.abs()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::excessive_precision)]
    fn formats_like_dotnet_g15() {
        assert_eq!(format_number(0.84551240822557006), "0.84551240822557");
        assert_eq!(format_number(123456.789), "123456.789");
        assert_eq!(format_number(-2.0), "-2");
        assert_eq!(format_number(1.2e-2), "0.012");
        assert_eq!(format_number(1e15), "1E+15");
        assert_eq!(format_number(1e-5), "1E-05");
        assert_eq!(format_number(0.0001), "0.0001");
        assert_eq!(format_number(-0.0), "0");
        assert_eq!(format_number(100.0), "100");
    }

    #[test]
    fn parses_like_javascript_number() {
        assert_eq!(parse_js_number(" 0xff "), Some(255.0));
        assert_eq!(parse_js_number(" +1.2e2 "), Some(120.0));
        assert_eq!(parse_js_number(""), Some(0.0));
        assert_eq!(parse_js_number("-0xFF"), None);
        assert_eq!(parse_js_number("0x01p2"), None);
        assert_eq!(parse_js_number("-Inf"), None);
        assert_eq!(parse_js_number(".5"), Some(0.5));
        assert_eq!(parse_js_number("5."), Some(5.0));
        assert_eq!(parse_js_number("."), None);
    }
}
