//! One table of the forms a secret takes in a log (issue 16, "How it is checked": the
//! masking corpus), for the tests that run it through the host executor, the VM and
//! both forge fakes: a step script that prints every form, the secrets it needs, and the
//! texts that must appear nowhere afterwards.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The secrets of the corpus, by name (for a job's secrets and its `secrets` context).
pub fn secrets() -> Vec<(&'static str, String)> {
    vec![
        ("MASK_PLAIN", "plain-Zq7Secret-value".to_owned()),
        ("MASK_B64", "base64-Xk2Secret-value".to_owned()),
        ("MASK_URL", "url-Pw9/secret value+1&x=y".to_owned()),
        ("MASK_JSON", "json-Qe4 \"quoted\" back\\slash".to_owned()),
        ("MASK_TRAIL", "trail-Rt5Secret ".to_owned()),
        ("MASK_MULTI", "multi-first-Hj6\nmulti-second-Hj6".to_owned()),
        ("MASK_OVER_A", "AAAA1111CCCC".to_owned()),
        ("MASK_OVER_B", "CCCC9999".to_owned()),
        ("MASK_ANSI", "ansi-Vb8\x1b[1mbold-Vb8Secret".to_owned()),
        ("MASK_CR", "cr-before-Nm4\rcr-after-Nm4".to_owned()),
    ]
}

/// The step environment that hands every secret to [`script`]: `NAME` set to
/// `${{ secrets.NAME }}` (for a workflow whose job has the secrets in its context).
pub fn env_from_secrets_context() -> BTreeMap<String, String> {
    secrets().into_iter().map(|(name, _)| (name.to_owned(), format!("${{{{ secrets.{name} }}}}"))).collect()
}

/// The step environment with the secrets' values themselves.
pub fn env_with_values() -> BTreeMap<String, String> {
    secrets().into_iter().map(|(name, value)| (name.to_owned(), value)).collect()
}

/// A bash script that prints every form of every secret, reading them from the
/// environment ([`env_from_secrets_context`]). Values registered with `::add-mask::` are
/// put together at run time, so that the script itself never holds them (a workflow file
/// is not secret and may be logged).
pub fn script() -> String {
    r#"
echo "plain: $MASK_PLAIN"
echo "plain on stderr: $MASK_PLAIN" >&2
for prefix in "" "a" "ab"; do printf '%s%s!' "$prefix" "$MASK_B64" | base64 -w0; echo; done
url() { local s="$1" i c; for ((i = 0; i < ${#s}; i++)); do c=${s:i:1}; case $c in [a-zA-Z0-9.~_-]) printf '%s' "$c";; *) printf '%%%02X' "'$c";; esac; done; echo; }
echo "url: $(url "$MASK_URL")"
printf '{"json":"%s"}\n' "$(printf '%s' "$MASK_JSON" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"
echo "trailing: $(echo $MASK_TRAIL)."
part=Lm3
echo "::add-mask::  lead-${part}Secret"
echo "after add-mask: lead-${part}Secret"
echo "on stderr: lead-${part}Secret" >&2
echo "::add-mask::esc-Ab1${part}%0Aesc-Cd2${part}%25"
echo "escaped lines: esc-Ab1${part} and esc-Cd2${part}%"
printf '%s\n' "$MASK_MULTI"
echo "second line alone: ${MASK_MULTI#*$'\n'}"
echo "overlap: ${MASK_OVER_A}9999"
printf 'ansi: %s\n' "$MASK_ANSI"
printf 'ansi rendered: %s\n' "$(printf '%s' "$MASK_ANSI" | sed 's/\x1b\[[0-9;]*m//g')"
printf 'cr: %s\n' "$MASK_CR"
printf 'cr then more: %s tail\n' "$MASK_CR"
"#
    .to_owned()
}

/// `(form, text)`: what must not appear in any log, forge report or service log line
/// once [`script`] ran with the corpus's secrets.
pub fn needles() -> Vec<(&'static str, String)> {
    let value = |name: &str| secrets().into_iter().find(|(n, _)| *n == name).map(|(_, v)| v).unwrap_or_default();
    let mut needles = vec![
        ("plain", value("MASK_PLAIN")),
        ("url-encoded", uri_escape(&value("MASK_URL"))),
        ("json-escaped", serde_json::to_string(&value("MASK_JSON")).unwrap_or_default().trim_matches('"').to_owned()),
        ("trailing space", "trail-Rt5Secret".to_owned()),
        ("add-mask with a leading space", "lead-Lm3Secret".to_owned()),
        ("add-mask %0A escape, first line", "esc-Ab1Lm3".to_owned()),
        ("add-mask %0A escape, second line", "esc-Cd2Lm3".to_owned()),
        ("multi-line, first line", "multi-first-Hj6".to_owned()),
        ("multi-line, second line", "multi-second-Hj6".to_owned()),
        ("overlapping, first", "AAAA1111CCCC".to_owned()),
        ("overlapping, second", "CCCC9999".to_owned()),
        ("ANSI inside", "bold-Vb8Secret".to_owned()),
        ("ANSI inside, rendered", "ansi-Vb8bold".to_owned()),
        ("bare CR, before", "cr-before-Nm4".to_owned()),
        ("bare CR, after", "cr-after-Nm4".to_owned()),
    ];
    let b64 = value("MASK_B64");
    for (form, prefix) in [("base64", ""), ("base64 after 1 byte", "a"), ("base64 after 2 bytes", "ab")] {
        needles.push((form, base64_of_secret_part(prefix, &b64, "!")));
    }
    needles
}

/// Which needles `text` holds, by form.
pub fn leaks(text: &str) -> Vec<&'static str> {
    needles().into_iter().filter(|(_, needle)| text.contains(needle.as_str())).map(|(form, _)| form).collect()
}

/// In base64 of `prefix + secret + suffix`, the characters made of the secret's bits
/// from its first byte on a 3-byte boundary to its end: what a reader could decode back
/// into all of the secret but at most its first two bytes (as much as GitHub's runner
/// hides with its three alignments).
fn base64_of_secret_part(prefix: &str, secret: &str, suffix: &str) -> String {
    let encoded = STANDARD.encode(format!("{prefix}{secret}{suffix}"));
    let first_byte = prefix.len().div_ceil(3) * 3;
    let end_byte = prefix.len() + secret.len();
    encoded[first_byte * 4 / 3..end_byte * 8 / 6].to_owned()
}

fn uri_escape(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { char::from(b).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// Everything the process logs through `tracing`, down to `trace`, from the moment
/// [`capture_traces`] is first called.
#[derive(Debug, Clone, Default)]
pub struct CapturedTraces(Arc<Mutex<Vec<u8>>>);

impl CapturedTraces {
    /// The text logged so far.
    pub fn text(&self) -> String {
        self.0.lock().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }
}

impl Write for CapturedTraces {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once per process) a global subscriber that writes every event and span
/// field at `trace` level into a buffer, and returns that buffer.
pub fn capture_traces() -> CapturedTraces {
    static CAPTURED: std::sync::OnceLock<CapturedTraces> = std::sync::OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let captured = CapturedTraces::default();
            let writer = captured.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            // Another test of the same process may have installed one first; then its
            // events go there and this buffer stays empty, which the caller sees.
            let _ = tracing::subscriber::set_global_default(subscriber);
            captured
        })
        .clone()
}
