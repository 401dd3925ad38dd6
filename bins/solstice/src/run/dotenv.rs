//! `.env` files for `--secrets-file`, the format act's `--secret-file` reads.

/// Parses `NAME=VALUE` lines: blank lines and `#` comments are skipped, `export ` before
/// a name is allowed, a value may be in single quotes (taken as is) or double quotes
/// (`\n`, `\"`, `\\` unescaped, and it may span lines); an unquoted value ends at ` #`.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((number, line)) = lines.next() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!("line {}: expected NAME=VALUE", number + 1));
        };
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("line {}: `{name}` is not a valid name", number + 1));
        }
        let value = value.trim_start();
        let value = if let Some(rest) = value.strip_prefix('\'') {
            rest.split_once('\'').map(|(v, _)| v.to_owned()).ok_or_else(|| format!("line {}: unclosed '", number + 1))?
        } else if let Some(rest) = value.strip_prefix('"') {
            let mut raw = rest.to_owned();
            while !closes(&raw) {
                let Some((_, next)) = lines.next() else { return Err(format!("line {}: unclosed \"", number + 1)) };
                raw.push('\n');
                raw.push_str(next);
            }
            unescape(&raw)
        } else {
            value.split(" #").next().unwrap_or_default().trim_end().to_owned()
        };
        pairs.push((name.to_owned(), value));
    }
    Ok(pairs)
}

/// Whether `raw` (after the opening quote) holds an unescaped closing `"`.
fn closes(raw: &str) -> bool {
    let mut escaped = false;
    for c in raw.chars() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return true,
            _ => escaped = false,
        }
    }
    false
}

/// The text up to the closing quote, escapes resolved.
fn unescape(raw: &str) -> String {
    let mut out = String::new();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => {}
            },
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_forms_of_a_dotenv_file() {
        let text = "# comment\n\nTOKEN=abc # trailing\nexport QUOTED=\"a b\\nc\"\nSINGLE='x $y \\n'\nMULTI=\"line1\nline2\"\nEMPTY=\n";
        let pairs = parse(text).expect("parses");
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("TOKEN"), Some("abc"));
        assert_eq!(get("QUOTED"), Some("a b\nc"));
        assert_eq!(get("SINGLE"), Some("x $y \\n"));
        assert_eq!(get("MULTI"), Some("line1\nline2"));
        assert_eq!(get("EMPTY"), Some(""));
    }

    #[test]
    fn says_which_line_is_wrong() {
        assert_eq!(parse("A=1\nnot a pair\n").expect_err("bad"), "line 2: expected NAME=VALUE");
        assert!(parse("B=\"open\n").expect_err("unclosed").contains("unclosed"));
    }
}
