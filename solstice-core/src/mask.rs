//! Secret masking: no secret value leaves the engine in a log line.

/// Replaces registered secret values with `***`.
///
/// Multi-line secrets are registered line by line as well, since log lines are masked one
/// at a time. Empty and whitespace-only values are ignored (masking them would erase
/// every line). Longer values are replaced first, so a secret that contains another is
/// masked whole.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    values: Vec<String>,
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
        let mut add_one = |v: &str| {
            let v = v.trim_end_matches('\r');
            if !v.trim().is_empty() && !self.values.iter().any(|known| known == v) {
                self.values.push(v.to_owned());
            }
        };
        add_one(value);
        if value.contains('\n') {
            value.lines().for_each(add_one);
        }
        self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }

    /// The line with every registered value replaced by `***`.
    pub fn mask(&self, line: &str) -> String {
        let mut line = line.to_owned();
        for value in &self.values {
            if line.contains(value.as_str()) {
                line = line.replace(value.as_str(), "***");
            }
        }
        line
    }

    /// Whether no value is registered.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
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
}
