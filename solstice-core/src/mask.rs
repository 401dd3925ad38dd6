//! Secret masking: no secret value leaves the engine in a log line.
//!
//! The rules are those of GitHub's runner (`src/Sdk/DTLogging/Logging/SecretMasker.cs`):
//! every form of every secret is looked for, the places found are merged when they
//! overlap or touch, and each merged stretch becomes one `***`.

mod forms;

/// Replaces registered secret values, in every form a log may show them, with `***`.
///
/// A registered value is looked for as itself and encoded as GitHub's runner encodes it
/// (base64 from its first, second and third byte, with and without the characters that
/// depend on what follows; URI-, JSON-, XML- and expression-escaped; without surrounding
/// double quotes). A multi-line value is also registered line by line, split at `\n`
/// and at a bare `\r`, as log lines are masked one at a time. Each part is also
/// registered without surrounding whitespace and without ANSI escape sequences.
/// Empty and whitespace-only parts are ignored (masking them would erase every line).
#[derive(Debug, Clone, Default)]
pub struct Masker {
    /// Values as registered, so that registering one again costs nothing.
    registered: Vec<String>,
    /// Every form to look for.
    forms: Vec<String>,
}

impl Masker {
    /// A masker for the given values.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut masker = Self::default();
        for value in values {
            masker.add(value);
        }
        masker
    }

    /// Registers one more value (`::add-mask::` does this at run time).
    pub fn add(&mut self, value: &str) {
        if value.trim().is_empty() || self.registered.iter().any(|known| known == value) {
            return;
        }
        self.registered.push(value.to_owned());
        for part in forms::parts(value) {
            for form in forms::encodings(&part) {
                if !self.forms.contains(&form) {
                    self.forms.push(form);
                }
            }
        }
    }

    /// The line with every stretch that holds a form of a registered value replaced by
    /// `***`; overlapping or touching matches become one `***`, so no part of either
    /// value stays visible.
    pub fn mask(&self, line: &str) -> String {
        let mut found: Vec<(usize, usize)> = Vec::new();
        for form in &self.forms {
            let mut from = 0;
            while let Some(at) = line[from..].find(form.as_str()) {
                let start = from + at;
                found.push((start, start + form.len()));
                // Matches of one form may overlap too (`aa` in `aaa`): look again one
                // character further.
                from = start + line[start..].chars().next().map_or(1, char::len_utf8);
            }
        }
        if found.is_empty() {
            return line.to_owned();
        }
        found.sort_unstable();
        let mut masked = String::with_capacity(line.len());
        let mut shown_up_to = 0;
        let mut current: Option<(usize, usize)> = None;
        for (start, end) in found {
            match &mut current {
                Some((_, current_end)) if start <= *current_end => *current_end = (*current_end).max(end),
                _ => {
                    if let Some((s, e)) = current.replace((start, end)) {
                        masked.push_str(&line[shown_up_to..s]);
                        masked.push_str("***");
                        shown_up_to = e;
                    }
                }
            }
        }
        if let Some((s, e)) = current {
            masked.push_str(&line[shown_up_to..s]);
            masked.push_str("***");
            shown_up_to = e;
        }
        masked.push_str(&line[shown_up_to..]);
        masked
    }

    /// Whether `text` holds a form of a registered value (GitHub's runner drops a job
    /// output for which this is true).
    pub fn reveals_secret(&self, text: &str) -> bool {
        self.forms.iter().any(|form| text.contains(form.as_str()))
    }

    /// Whether no value is registered.
    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_whole_and_by_line() {
        let mut masker = Masker::new(["abc", "abcdef", ""]);
        assert_eq!(masker.mask("x abcdef y abc"), "x *** y ***");
        masker.add("line one\nline two");
        assert_eq!(masker.mask("got line two"), "got ***");
        assert_eq!(masker.mask("nothing here"), "nothing here");
        assert_eq!(Masker::new([" ", ""]).mask("a b"), "a b");
    }

    // SecretMasker.cs merges the positions of all matches before replacing, so two
    // overlapping secrets leave nothing of either (issue 16 saw `***CCCC9999`).
    #[test]
    fn overlapping_secrets_are_masked_together() {
        let masker = Masker::new(["AAAA1111CCCC", "CCCC9999"]);
        assert_eq!(masker.mask("x AAAA1111CCCC9999 y"), "x *** y");
        // Touching matches are one stretch too.
        assert_eq!(masker.mask("AAAA1111CCCCCCCC9999"), "***");
        assert_eq!(Masker::new(["aa"]).mask("aaa b"), "*** b");
    }

    // ValueEncoders.cs / HostContext.cs: base64 at three alignments, URI, JSON, XML,
    // expression escapes.
    #[test]
    fn encoded_forms_are_masked() {
        let masker = Masker::new(["p@ss w\"rd'<&>\\"]);
        for encoded in [
            "cEBzcyB3InJkJzwmPlw=",         // base64
            "QHNzIHcicmQnPCY+XA==",         // base64 from the second byte
            "c3MgdyJyZCc8Jj5c",             // base64 from the third byte
            "p%40ss%20w%22rd%27%3C%26%3E%5C", // Uri.EscapeDataString
            "p@ss w\\\"rd'<&>\\\\",         // JSON
            "p@ss w&quot;rd&apos;&lt;&amp;&gt;\\", // XML
            "p@ss w\"rd''<&>\\",            // expression string
        ] {
            assert_eq!(masker.mask(&format!("[{encoded}]")), "[***]", "{encoded}");
        }
        // base64 of `user:` + secret: the secret starts at byte 5, which the
        // second-byte alignment lines up with.
        let masker = Masker::new(["hunter2-secret"]);
        let line = "Authorization: Basic dXNlcjpodW50ZXIyLXNlY3JldA==";
        assert!(!masker.mask(line).contains("dW50ZXIyLXNlY3Jld"), "{}", masker.mask(line));
        assert!(masker.reveals_secret(line));
        assert!(!masker.reveals_secret("Authorization: Basic dXNlcjpvdGhlcg=="));
    }

    #[test]
    fn whitespace_ansi_and_bare_cr_do_not_hide_a_secret() {
        let masker = Masker::new(["trailing-space-secret ", "ansi\x1b[31mred\x1b[0msecret", "before-cr\rafter-cr"]);
        assert_eq!(masker.mask("echo trailing-space-secret."), "echo ***.");
        assert_eq!(masker.mask("ansi\x1b[31mred\x1b[0msecret"), "***");
        assert_eq!(masker.mask("rendered: ansiredsecret"), "rendered: ***");
        assert_eq!(masker.mask("x before-cr\rafter-cr y"), "x *** y");
        assert_eq!(masker.mask("after-cr"), "***");
        assert_eq!(masker.mask("before-cr"), "***");
    }
}
