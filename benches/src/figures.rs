//! Raw figures from a benchmark program to the harness.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Writing or reading a figures file failed.
#[derive(Debug, thiserror::Error)]
pub enum FiguresError {
    /// The file could not be written (to a temporary name, then renamed over it).
    #[error("cannot write the figures file {path}")]
    Write {
        /// The figures file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file could not be read.
    #[error("cannot read the figures file {path}")]
    Read {
        /// The figures file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not one JSON object.
    #[error("the figures file {path} is not a JSON object")]
    Parse {
        /// The figures file.
        path: PathBuf,
        /// Why, when it is not JSON at all.
        #[source]
        source: Option<serde_json::Error>,
    },
}

/// The figures a benchmark program measured, by name: one JSON object of numbers and
/// texts in the file given by `--json FILE` on the program's command line.
///
/// The file is rewritten after every figure (to a temporary name, then renamed), so a
/// benchmark that fails half-way still hands over what it measured before. Without
/// `--json` nothing is written and the program prints its figures as before.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    path: Option<PathBuf>,
    values: Map<String, Value>,
}

impl Figures {
    /// Figures written to `path`, or to nowhere when `None`. Writes the empty object at
    /// once, so that the harness can tell a program that started from one that did not.
    ///
    /// # Errors
    ///
    /// [`FiguresError::Write`] if the file cannot be written.
    pub fn new(path: Option<PathBuf>) -> Result<Self, FiguresError> {
        let figures = Self { path, values: Map::new() };
        figures.save()?;
        Ok(figures)
    }

    /// The figures file named by `--json FILE` (or `--json=FILE`) among `args`, if any.
    /// Other arguments are left to the program.
    pub fn path_from_args(args: impl IntoIterator<Item = String>) -> Option<PathBuf> {
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "--json" {
                return args.next().map(PathBuf::from);
            }
            if let Some(path) = arg.strip_prefix("--json=") {
                return Some(PathBuf::from(path));
            }
        }
        None
    }

    /// Records a number (in the unit the harness expects for `name`) and rewrites the file.
    ///
    /// # Errors
    ///
    /// [`FiguresError::Write`] if the file cannot be written.
    pub fn number(&mut self, name: &str, value: f64) -> Result<(), FiguresError> {
        self.values.insert(name.to_owned(), Value::from(value));
        self.save()
    }

    /// Records a text (for example the accelerator a VM booted with) and rewrites the file.
    ///
    /// # Errors
    ///
    /// [`FiguresError::Write`] if the file cannot be written.
    pub fn text(&mut self, name: &str, value: &str) -> Result<(), FiguresError> {
        self.values.insert(name.to_owned(), Value::from(value));
        self.save()
    }

    /// The number recorded as `name`.
    pub fn get_number(&self, name: &str) -> Option<f64> {
        self.values.get(name).and_then(Value::as_f64)
    }

    /// The text recorded as `name`.
    pub fn get_text(&self, name: &str) -> Option<&str> {
        self.values.get(name).and_then(Value::as_str)
    }

    /// Reads the figures a program wrote to `path`.
    ///
    /// # Errors
    ///
    /// [`FiguresError::Read`] if the file cannot be read (the program never started, or
    /// failed before its first figure), [`FiguresError::Parse`] if it is not a JSON object.
    pub fn read(path: &Path) -> Result<Self, FiguresError> {
        let bytes = std::fs::read(path).map_err(|source| FiguresError::Read { path: path.to_owned(), source })?;
        match serde_json::from_slice(&bytes) {
            Ok(Value::Object(values)) => Ok(Self { path: None, values }),
            Ok(_) => Err(FiguresError::Parse { path: path.to_owned(), source: None }),
            Err(e) => Err(FiguresError::Parse { path: path.to_owned(), source: Some(e) }),
        }
    }

    fn save(&self) -> Result<(), FiguresError> {
        let Some(path) = &self.path else { return Ok(()) };
        let write = || {
            let mut temporary = path.clone().into_os_string();
            temporary.push(".partial");
            std::fs::write(&temporary, Value::Object(self.values.clone()).to_string())?;
            std::fs::rename(&temporary, path)
        };
        write().map_err(|source| FiguresError::Write { path: path.clone(), source })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_file_comes_from_json_in_either_spelling_among_other_arguments() {
        assert_eq!(Figures::path_from_args(args(&["5000000", "--json", "/t/f.json", "--bench"])), Some("/t/f.json".into()));
        assert_eq!(Figures::path_from_args(args(&["--bench", "--json=/t/g.json"])), Some("/t/g.json".into()));
        assert_eq!(Figures::path_from_args(args(&["--bench", "5000000"])), None);
        assert_eq!(Figures::path_from_args(args(&["--json"])), None);
    }

    #[test]
    fn every_figure_is_in_the_file_as_soon_as_it_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("figures.json");
        let mut figures = Figures::new(Some(path.clone())).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}");
        figures.number("ours_lines_per_s", 612_000.5).unwrap();
        let read = Figures::read(&path).unwrap();
        assert_eq!(read.get_number("ours_lines_per_s"), Some(612_000.5));
        assert_eq!(read.get_number("baseline_lines_per_s"), None);
        figures.text("accelerator", "tcg").unwrap();
        let read = Figures::read(&path).unwrap();
        assert_eq!(read.get_number("ours_lines_per_s"), Some(612_000.5));
        assert_eq!(read.get_text("accelerator"), Some("tcg"));
        assert_eq!(read.get_number("accelerator"), None);
        assert!(!dir.path().join("figures.json.partial").exists());
    }

    #[test]
    fn without_a_file_nothing_is_written_and_the_figures_are_kept_in_memory() {
        let mut figures = Figures::new(None).unwrap();
        figures.number("x", 1.0).unwrap();
        assert_eq!(figures.get_number("x"), Some(1.0));
    }

    #[test]
    fn a_missing_or_malformed_file_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("never-written.json");
        let err = Figures::read(&missing).unwrap_err();
        assert!(matches!(err, FiguresError::Read { .. }));
        assert!(err.to_string().contains("never-written.json"));
        let list = dir.path().join("list.json");
        std::fs::write(&list, "[1, 2]").unwrap();
        assert!(matches!(Figures::read(&list), Err(FiguresError::Parse { source: None, .. })));
        let garbage = dir.path().join("garbage.json");
        std::fs::write(&garbage, "{\"a\": ").unwrap();
        assert!(matches!(Figures::read(&garbage), Err(FiguresError::Parse { source: Some(_), .. })));
    }
}
