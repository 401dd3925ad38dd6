//! Where the programs keep images, the test guest, the accelerator verdict and their
//! machines' run directories, when their configuration does not say.

use std::path::PathBuf;

/// `SOLSTICE_CACHE_DIR` if set, else `~/.cache/solstice`, else (no `$HOME`, as under
/// some service managers) `solstice-cache` in the temporary directory. One rule for
/// every program, so that `solstice image pull` fills the cache the services read.
pub fn default_cache_dir() -> PathBuf {
    cache_dir_from(std::env::var_os("SOLSTICE_CACHE_DIR"), std::env::var_os("HOME"))
}

fn cache_dir_from(explicit: Option<std::ffi::OsString>, home: Option<std::ffi::OsString>) -> PathBuf {
    explicit
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| home.filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".cache/solstice")))
        .unwrap_or_else(|| std::env::temp_dir().join("solstice-cache"))
}

#[cfg(test)]
mod tests {
    use super::cache_dir_from;
    use std::path::PathBuf;

    #[test]
    fn the_variable_then_home_then_the_temporary_directory() {
        assert_eq!(cache_dir_from(Some("/srv/cache".into()), Some("/home/ci".into())), PathBuf::from("/srv/cache"));
        assert_eq!(cache_dir_from(None, Some("/home/ci".into())), PathBuf::from("/home/ci/.cache/solstice"));
        assert_eq!(cache_dir_from(Some("".into()), None), std::env::temp_dir().join("solstice-cache"));
    }
}
