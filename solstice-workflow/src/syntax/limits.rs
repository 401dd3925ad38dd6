//! GitHub's limits on a workflow file: its size, how deep it nests and how much memory the
//! template tree it reads into may take. They protect the reader from hostile files as they
//! protect GitHub's, and they are checked while reading, before anything is built from them.
//!
//! The defaults and the accounting are GitHub's: `ParseOptions` (`MaxDepth` 50, `MaxFileSize`
//! 1 MiB, `MaxResultSize` 10 MiB) and `TemplateMemory` (24 bytes per object, 26 plus two per
//! UTF-16 unit per string) in actions/runner's src/Sdk/DTPipelines/Pipelines/ObjectTemplating/
//! ParseOptions.cs and src/Sdk/DTObjectTemplating/ObjectTemplating/TemplateMemory.cs.

use crate::error::{Diagnostics, Pos, WorkflowErrorKind};

/// Limits on what the reader accepts ([`crate::parse_workflow_with_limits`]). The defaults are
/// GitHub's; the KDL dialect applies the same file-size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct ReadLimits {
    pub(crate) max_file_size: usize,
    pub(crate) max_depth: usize,
    pub(crate) max_result_size: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits { max_file_size: 1024 * 1024, max_depth: 50, max_result_size: 10 * 1024 * 1024 }
    }
}

impl ReadLimits {
    /// GitHub's limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// The longest file accepted, in characters (UTF-16 code units, as GitHub counts).
    /// Default: 1,048,576.
    pub fn max_file_size(mut self, characters: usize) -> Self {
        self.max_file_size = characters;
        self
    }

    /// The deepest nesting of mappings and sequences accepted, the document's own mapping
    /// included. Default: 50.
    pub fn max_depth(mut self, depth: usize) -> Self {
        self.max_depth = depth;
        self
    }

    /// The most memory the read file may take by GitHub's reckoning (24 bytes per mapping,
    /// sequence, boolean, number or null; 50 plus two per UTF-16 unit per string; the file's
    /// name counts as a string of 26 plus two per unit). Default: 10,485,760.
    pub fn max_result_size(mut self, bytes: usize) -> Self {
        self.max_result_size = bytes;
        self
    }
}

/// GitHub's per-object overhead in `TemplateMemory`.
const MIN_OBJECT_SIZE: usize = 24;
/// GitHub's per-string overhead in `TemplateMemory`.
const STRING_BASE_OVERHEAD: usize = 26;

/// The length of `text` as GitHub measures strings (UTF-16 code units).
pub(crate) fn utf16_len(text: &str) -> usize {
    // ASCII text, the common case, is one unit per byte: no need to decode it.
    if text.is_ascii() { text.len() } else { text.chars().map(char::len_utf16).sum() }
}

/// Refuses a file longer than the limit, before any parsing: returns false (and reports
/// GitHub's message for the whole file) when it is too long.
pub(crate) fn check_file_size(source: &str, limits: &ReadLimits, diag: &mut Diagnostics) -> bool {
    // A UTF-16 unit takes at least one byte of UTF-8, so a file no longer in bytes than the
    // limit is within it without counting.
    if source.len() <= limits.max_file_size || utf16_len(source) <= limits.max_file_size {
        return true;
    }
    diag.push(
        WorkflowErrorKind::Limit,
        Pos::default(),
        format!("The maximum file size of {} characters has been exceeded", limits.max_file_size),
    );
    false
}

/// Counts the memory of what is read, GitHub's way, against [`ReadLimits::max_result_size`].
#[derive(Debug)]
pub(crate) struct Memory {
    used: usize,
    max: usize,
}

/// The read tree would take more memory than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MemoryExceeded;

impl Memory {
    /// Starts with the file's name, which GitHub's reader keeps as a string.
    pub(crate) fn new(file_name: &str, limits: &ReadLimits) -> Self {
        Memory { used: STRING_BASE_OVERHEAD + 2 * utf16_len(file_name), max: limits.max_result_size }
    }

    fn add(&mut self, bytes: usize) -> Result<(), MemoryExceeded> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.max { Err(MemoryExceeded) } else { Ok(()) }
    }

    /// A mapping, sequence, boolean, number or null.
    pub(crate) fn object(&mut self) -> Result<(), MemoryExceeded> {
        self.add(MIN_OBJECT_SIZE)
    }

    /// A string (a scalar or a mapping key).
    pub(crate) fn string(&mut self, text: &str) -> Result<(), MemoryExceeded> {
        self.add(MIN_OBJECT_SIZE + STRING_BASE_OVERHEAD + 2 * utf16_len(text))
    }

    /// GitHub's message when the limit is exceeded.
    pub(crate) const EXCEEDED: &'static str = "Maximum object size exceeded";
}

/// GitHub's message when the nesting limit is exceeded.
pub(crate) const DEPTH_EXCEEDED: &str = "Maximum object depth exceeded";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_size_counts_utf16_units_not_bytes() {
        let limits = ReadLimits::new().max_file_size(4);
        let mut diag = Diagnostics::new("w.yml");
        // Four characters, eight bytes: within the limit as GitHub counts.
        assert!(check_file_size("éééé", &limits, &mut diag));
        assert!(!check_file_size("ééééé", &limits, &mut diag));
        assert_eq!(diag.errors[0].message, "The maximum file size of 4 characters has been exceeded");
        assert_eq!((diag.errors[0].line, diag.errors[0].kind), (0, WorkflowErrorKind::Limit));
    }

    #[test]
    fn memory_counts_github_overheads() {
        let limits = ReadLimits::new().max_result_size(26 + 2 * 5 + 24 + 24 + 26 + 2 * 2);
        let mut memory = Memory::new("a.yml", &limits);
        assert_eq!(memory.object(), Ok(()));
        assert_eq!(memory.string("on"), Ok(()));
        assert_eq!(memory.object(), Err(MemoryExceeded));
    }
}
