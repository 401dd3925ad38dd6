//! Runner label specs: `name[:scheme[:argument]]`.

use serde::{Deserialize, Serialize};

/// Why a label spec is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LabelError {
    /// The name is empty or has surrounding spaces.
    #[error("label `{0}` has an empty name or spaces around it")]
    BadName(String),
    /// The scheme is not one Solstice CI knows.
    #[error("label `{spec}` has unknown scheme `{scheme}` (expected `vm` or `host`)")]
    UnknownScheme {
        /// The spec.
        spec: String,
        /// Its scheme.
        scheme: String,
    },
    /// `host` takes no argument.
    #[error("label `{0}`: the `host` scheme takes no argument")]
    HostArgument(String),
}

/// How jobs for a label run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "scheme", content = "image")]
pub enum LabelScheme {
    /// In a fresh VM booted from the image catalog entry named by the argument, or by
    /// the label name when there is none (the default).
    Vm(Option<String>),
    /// Directly on the runner's host, without isolation (`name:host`).
    Host,
}

/// One label of this runner, as written in the configuration or the `.runner` file.
///
/// Only the name goes over the wire (`Register.labels`, `Declare.labels`); the scheme
/// stays local and decides how a job for the label runs. Forms: `omnios` and
/// `omnios:vm` (a VM from the catalog entry `omnios`), `illumos:vm:omnios-r151054`
/// (a VM from the named catalog entry), `local:host` (on the host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSpec {
    /// The label name matched against `runs-on`.
    pub name: String,
    /// How its jobs run.
    pub scheme: LabelScheme,
}

impl LabelSpec {
    /// Parses `name[:scheme[:argument]]`, splitting on the first two `:`.
    ///
    /// # Errors
    /// [`LabelError`].
    pub fn parse(spec: &str) -> Result<Self, LabelError> {
        let mut parts = spec.splitn(3, ':');
        let name = parts.next().unwrap_or("");
        if name.is_empty() || name.trim() != name {
            return Err(LabelError::BadName(spec.to_owned()));
        }
        let scheme = match (parts.next(), parts.next()) {
            (None, _) | (Some("vm"), None) => LabelScheme::Vm(None),
            (Some("vm"), Some(image)) => LabelScheme::Vm(Some(image.trim_start_matches("//").to_owned())),
            (Some("host"), None) => LabelScheme::Host,
            (Some("host"), Some(_)) => return Err(LabelError::HostArgument(spec.to_owned())),
            (Some(other), _) => {
                return Err(LabelError::UnknownScheme { spec: spec.to_owned(), scheme: other.to_owned() });
            }
        };
        Ok(Self { name: name.to_owned(), scheme })
    }

    /// The image catalog entry for a VM label (the argument, else the name).
    pub fn image(&self) -> Option<&str> {
        match &self.scheme {
            LabelScheme::Vm(image) => Some(image.as_deref().unwrap_or(&self.name)),
            LabelScheme::Host => None,
        }
    }
}

impl std::fmt::Display for LabelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.scheme {
            LabelScheme::Vm(None) => f.write_str(&self.name),
            LabelScheme::Vm(Some(image)) => write!(f, "{}:vm:{image}", self.name),
            LabelScheme::Host => write!(f, "{}:host", self.name),
        }
    }
}

impl std::str::FromStr for LabelSpec {
    type Err = LabelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The names of some label specs, as sent to Forgejo.
pub fn label_names(labels: &[LabelSpec]) -> Vec<String> {
    labels.iter().map(|l| l.name.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_into_name_and_scheme() {
        let l = LabelSpec::parse("omnios").expect("bare");
        assert_eq!((l.name.as_str(), l.image()), ("omnios", Some("omnios")));
        let l = LabelSpec::parse("illumos:vm:omnios-r151054").expect("vm image");
        assert_eq!(l.image(), Some("omnios-r151054"));
        assert_eq!(l.to_string(), "illumos:vm:omnios-r151054");
        let l = LabelSpec::parse("local:host").expect("host");
        assert_eq!((l.scheme.clone(), l.image()), (LabelScheme::Host, None));
        assert_eq!(l.to_string(), "local:host");
        assert!(matches!(LabelSpec::parse("x:host://y"), Err(LabelError::HostArgument(_))));
        assert!(matches!(LabelSpec::parse("x:docker://node"), Err(LabelError::UnknownScheme { .. })));
        assert!(matches!(LabelSpec::parse(" x"), Err(LabelError::BadName(_))));
        assert!(matches!(LabelSpec::parse(""), Err(LabelError::BadName(_))));
    }
}
