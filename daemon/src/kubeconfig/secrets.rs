//! Where a kubeconfig's secrets are, as spans of its text, and what is done with them: masked
//! in every diff shown, and left out of the backup `convert` keeps.
//!
//! Spans come from yaml-edit's tree, so a secret is found however the file spells it (plain,
//! single- or double-quoted with escapes, in a flow or block sequence) and masking replaces
//! exactly its scalar. What a converted user hands to the keyring is replaced in the backup by
//! a placeholder naming its keyring entry, which `--undo` reads back; a legacy auth-provider's
//! cached tokens, which convert drops, are dropped from the backup too. Credentials convert
//! does not touch (another user's static token, a client key) are masked in diffs only: the
//! kubeconfig keeps them, and so does its backup.

use std::str::FromStr;

use yaml_edit::{Document, Mapping, YamlNode};

use super::KubeconfigError;
use super::azure::{SECRET_VARIABLES, SecretField};
use super::tree::{get_text, text_of};

/// The keyring placeholder's marker:
/// `"token-broker-keyring:<spelling>:client-secret/<session id>"`, where the spelling is how
/// the file wrote the scalar (`plain`, `single` or `double`), so that undo writes it the same
/// way.
const KEYRING_MARK: &str = "token-broker-keyring:";
/// What stands for a token convert dropped.
const DROPPED: &str = "\"token-broker: dropped\"";

/// What a span of secret text is to convert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpanKind {
    /// Moved into the keyring when its user is converted; `prefix` is the text before the
    /// value in the same scalar (an inline `--client-secret=`).
    Moved { field: SecretField, prefix: String },
    /// A legacy auth-provider's cached token, dropped when its user is converted.
    Dropped,
    /// A credential convert leaves alone.
    Kept,
}

/// A secret's scalar in the text: byte offsets, whose user it is, and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub user: String,
    pub kind: SpanKind,
}

/// `exec` flags whose value is a secret.
const SECRET_FLAGS: &[(&str, Option<SecretField>)] = &[
    ("--client-secret", Some(SecretField::ClientSecret)),
    (
        "--client-certificate-password",
        Some(SecretField::CertificatePassword),
    ),
    ("--password", Some(SecretField::Password)),
    ("--oidc-client-secret", Some(SecretField::ClientSecret)),
];

/// User fields that hold credentials of their own.
const CREDENTIAL_FIELDS: &[&str] = &["token", "password", "client-key-data"];

/// Whether an `env` name looks like it carries a secret (for plugins other than ours).
fn secret_looking(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["SECRET", "PASSWORD", "TOKEN", "KEY"]
        .iter()
        .any(|word| upper.contains(word))
}

/// Every secret's span in `text`, in order.
pub fn secret_spans(text: &str) -> Result<Vec<Span>, KubeconfigError> {
    let doc = Document::from_str(text).map_err(|e| KubeconfigError::Yaml(e.to_string()))?;
    let mut spans = Vec::new();
    let Some(root) = doc.as_mapping() else {
        return Ok(spans);
    };
    let Some(users) = root.get_sequence("users") else {
        return Ok(spans);
    };
    for item in users.values() {
        let Some(entry) = item.as_mapping() else {
            continue;
        };
        let name = get_text(entry, "name").unwrap_or_default();
        let Some(user) = entry.get_mapping("user") else {
            continue;
        };
        user_spans(&user, &name, &mut spans);
    }
    spans.sort_by_key(|s| s.start);
    Ok(spans)
}

fn push(spans: &mut Vec<Span>, node: &YamlNode, user: &str, kind: SpanKind) {
    let range = node.byte_range();
    spans.push(Span {
        start: range.start as usize,
        end: range.end as usize,
        user: user.to_string(),
        kind,
    });
}

fn user_spans(user: &Mapping, name: &str, spans: &mut Vec<Span>) {
    for field in CREDENTIAL_FIELDS {
        if let Some(node) = user.get(field).filter(|n| n.as_scalar().is_some()) {
            push(spans, &node, name, SpanKind::Kept);
        }
    }
    if let Some(provider) = user.get_mapping("auth-provider") {
        let azure = get_text(&provider, "name").as_deref() == Some("azure");
        if let Some(config) = provider.get_mapping("config") {
            for key in ["access-token", "refresh-token", "id-token", "client-secret"] {
                if let Some(node) = config.get(key).filter(|n| n.as_scalar().is_some()) {
                    let kind = if azure && key != "client-secret" {
                        SpanKind::Dropped
                    } else {
                        SpanKind::Kept
                    };
                    push(spans, &node, name, kind);
                }
            }
        }
    }
    let Some(exec) = user.get_mapping("exec") else {
        return;
    };
    if let Some(args) = exec.get_sequence("args") {
        let args: Vec<YamlNode> = args.values().collect();
        for (i, arg) in args.iter().enumerate() {
            let Some(text) = text_of(arg) else { continue };
            for (flag, field) in SECRET_FLAGS {
                let kind = |prefix: &str| match field {
                    Some(field) => SpanKind::Moved {
                        field: *field,
                        prefix: prefix.to_string(),
                    },
                    None => SpanKind::Kept,
                };
                if text == *flag {
                    if let Some(value) = args.get(i + 1) {
                        push(spans, value, name, kind(""));
                    }
                } else if text
                    .strip_prefix(flag)
                    .is_some_and(|rest| rest.starts_with('='))
                {
                    push(spans, arg, name, kind(&format!("{flag}=")));
                }
            }
        }
    }
    if let Some(env) = exec.get_sequence("env") {
        for item in env.values() {
            let Some(entry) = item.as_mapping() else {
                continue;
            };
            let Some(var) = get_text(entry, "name") else {
                continue;
            };
            let Some(value) = entry.get("value").filter(|n| n.as_scalar().is_some()) else {
                continue;
            };
            match SECRET_VARIABLES.iter().find(|(n, _)| *n == var) {
                Some((_, field)) => push(
                    spans,
                    &value,
                    name,
                    SpanKind::Moved {
                        field: *field,
                        prefix: String::new(),
                    },
                ),
                None if secret_looking(&var) => push(spans, &value, name, SpanKind::Kept),
                None => {}
            }
        }
    }
}

/// `text` with each span replaced by what `with` says (spans it returns `None` for stay).
fn replace_spans(text: &str, spans: &[Span], with: impl Fn(&Span) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for span in spans {
        if span.start < at || span.end > text.len() {
            continue;
        }
        let Some(replacement) = with(span) else {
            continue;
        };
        out.push_str(&text[at..span.start]);
        out.push_str(&replacement);
        at = span.end;
    }
    out.push_str(&text[at..]);
    out
}

/// `text` with every secret replaced by `<secret>`, for showing. Text that does not parse is
/// masked by the values given, which is all one can do.
pub fn mask(text: &str, values: &[&str]) -> String {
    let masked = match secret_spans(text) {
        Ok(spans) => replace_spans(text, &spans, |_| Some("<secret>".into())),
        Err(_) => text.to_string(),
    };
    values
        .iter()
        .filter(|v| v.len() >= 4)
        .fold(masked, |t, v| t.replace(v, "<secret>"))
}

/// The keyring entry a moved secret lands in (brokerd's keys).
pub fn keyring_key(field: SecretField, session_id: &str) -> String {
    let kind = match field {
        SecretField::ClientSecret => "client-secret",
        SecretField::CertificatePassword => "certificate-password",
        SecretField::Password => "password",
    };
    format!("{kind}/{session_id}")
}

/// What the backup of a converted file holds: the original, byte for byte, but for the
/// secrets of converted users. Those that moved into the keyring become placeholders naming
/// their entry (`session_of` gives a converted user's session id); dropped tokens become a
/// mark.
pub fn backup_text(
    original: &str,
    session_of: &dyn Fn(&str) -> Option<String>,
) -> Result<String, KubeconfigError> {
    let spans = secret_spans(original)?;
    Ok(replace_spans(original, &spans, |span| {
        let session = session_of(&span.user)?;
        match &span.kind {
            SpanKind::Moved { field, prefix } => {
                let spelling = match original[span.start..].chars().next() {
                    Some('"') => "double",
                    Some('\'') => "single",
                    _ => "plain",
                };
                Some(format!(
                    "\"{prefix}{KEYRING_MARK}{spelling}:{}\"",
                    keyring_key(*field, &session)
                ))
            }
            SpanKind::Dropped => Some(DROPPED.to_string()),
            SpanKind::Kept => None,
        }
    }))
}

/// The keyring entries a backup's placeholders name.
pub fn placeholders(backup: &str) -> Vec<String> {
    placeholder_spans(backup)
        .into_iter()
        .map(|p| p.key)
        .collect()
}

/// A placeholder in a backup: its span (the quotes included), the flag before the value, how
/// the value was spelled, and its keyring key.
struct Placeholder {
    start: usize,
    end: usize,
    prefix: String,
    spelling: String,
    key: String,
}

fn placeholder_spans(backup: &str) -> Vec<Placeholder> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(offset) = backup[from..].find(KEYRING_MARK) {
        let mark = from + offset;
        from = mark + KEYRING_MARK.len();
        let Some(open) = backup[..mark].rfind('"') else {
            continue;
        };
        let prefix = &backup[open + 1..mark];
        let flag_like = prefix.is_empty()
            || (prefix.starts_with("--")
                && prefix.ends_with('=')
                && prefix[..prefix.len() - 1]
                    .chars()
                    .skip(2)
                    .all(|c| c.is_ascii_alphanumeric() || c == '-'));
        let Some(close) = backup[from..].find('"').map(|c| from + c) else {
            continue;
        };
        let Some((spelling, key)) = backup[from..close].split_once(':') else {
            continue;
        };
        let spelling_like = matches!(spelling, "plain" | "single" | "double");
        let key_like = key.split_once('/').is_some_and(|(kind, id)| {
            kind.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                && !id.is_empty()
                && id.chars().all(|c| c.is_ascii_hexdigit())
        });
        if flag_like && spelling_like && key_like {
            found.push(Placeholder {
                start: open,
                end: close + 1,
                prefix: prefix.to_string(),
                spelling: spelling.to_string(),
                key: key.to_string(),
            });
        }
    }
    found
}

/// The backup with its placeholders filled in from the keyring (`secret(key)`), the file as it
/// was. Fails, naming the entry, when one of them is no longer there (a logout removed it).
pub fn restore(
    backup: &str,
    secret: &dyn Fn(&str) -> Result<Option<String>, String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(backup.len());
    let mut at = 0;
    for placeholder in placeholder_spans(backup) {
        let key = &placeholder.key;
        let value = secret(key)?.ok_or_else(|| {
            format!(
                "the keyring no longer holds {key} (was the session logged out?), so the \
                 secret it replaced cannot be put back"
            )
        })?;
        let scalar = format!("{}{value}", placeholder.prefix);
        out.push_str(&backup[at..placeholder.start]);
        out.push_str(&match placeholder.spelling.as_str() {
            // It was plain in this very place, so it can be again (one line, as read).
            "plain" if !scalar.contains(['\n', '\r']) => scalar,
            "single" if !scalar.contains(['\n', '\r']) => {
                format!("'{}'", scalar.replace('\'', "''"))
            }
            _ => double_quoted(&scalar),
        });
        at = placeholder.end;
    }
    out.push_str(&backup[at..]);
    Ok(out)
}

/// A YAML double-quoted scalar holding exactly `value`.
fn double_quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A unified diff from `old` to `new`, every secret masked: found by the tree whatever its
/// spelling, in the lines that change and in the lines around them (another user's static
/// token), and each of `values` wherever it appears besides.
pub fn masked_diff(path: &str, old: &str, new: &str, values: &[&str]) -> String {
    let (old, new) = (mask(old, values), mask(new, values));
    similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .header(path, &format!("{path} (converted)"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"users:
- name: ci
  user:
    exec:
      command: kubelogin
      args: ["get-token", "--login=spn", "--client-secret", "s3\"cr\\et", '--password=p''w']
      env:
      - name: AZURE_CLIENT_CERTIFICATE_PASSWORD
        value: "pfx\u0041pass"
      - name: OTHER_TOKEN
        value: other-token-value
- name: static
  user:
    token: static-token-value
- name: legacy
  user:
    auth-provider:
      name: azure
      config:
        access-token: legacy-access-token
"#;

    #[test]
    fn secrets_are_found_however_they_are_spelled() {
        let spans = secret_spans(FILE).unwrap();
        let texts: Vec<&str> = spans.iter().map(|s| &FILE[s.start..s.end]).collect();
        assert_eq!(
            texts,
            [
                r#""s3\"cr\\et""#,
                "'--password=p''w'",
                r#""pfx\u0041pass""#,
                "other-token-value",
                "static-token-value",
                "legacy-access-token"
            ]
        );
        assert!(
            matches!(spans[1].kind, SpanKind::Moved { ref prefix, .. } if prefix == "--password=")
        );
        assert_eq!(spans[3].kind, SpanKind::Kept);
        assert_eq!(spans[5].kind, SpanKind::Dropped);
    }

    #[test]
    fn a_diff_masks_escaped_spellings_and_other_users_tokens() {
        let diff = masked_diff(
            "config",
            FILE,
            &FILE.replace("kubelogin", "broker-shim"),
            &[],
        );
        for secret in [
            "s3",
            "cr\\\\et",
            "p''w",
            "pfx",
            "static-token",
            "legacy-access",
        ] {
            assert!(!diff.contains(secret), "{secret} in {diff}");
        }
        assert!(diff.contains("<secret>"), "{diff}");
    }

    #[test]
    fn a_backup_holds_placeholders_that_undo_fills_from_the_keyring() {
        let session = |user: &str| (user != "static").then(|| "0123456789ab".to_string());
        let backup = backup_text(FILE, &session).unwrap();
        for secret in ["s3", "p''w", "pfx", "legacy-access-token"] {
            assert!(!backup.contains(secret), "{secret} in {backup}");
        }
        // Left as the kubeconfig has them: credentials convert did not move.
        assert!(backup.contains("static-token-value"));
        assert!(backup.contains("other-token-value"));
        assert_eq!(
            placeholders(&backup),
            [
                "client-secret/0123456789ab",
                "password/0123456789ab",
                "certificate-password/0123456789ab"
            ]
        );
        let keyring = |key: &str| {
            Ok(Some(
                match key.split('/').next().unwrap() {
                    "client-secret" => "s3\"cr\\et",
                    "password" => "p'w",
                    _ => "pfxApass",
                }
                .to_string(),
            ))
        };
        let restored = restore(&backup, &keyring).unwrap();
        // The same values, read back by a YAML parser.
        let reparsed = secret_spans(&restored).unwrap();
        let doc = Document::from_str(&restored).unwrap();
        assert!(doc.as_mapping().is_some());
        let values: Vec<String> = reparsed
            .iter()
            .map(|s| {
                let text = &restored[s.start..s.end];
                let doc = Document::from_str(&format!("v: {text}\n")).unwrap();
                get_text(&doc.as_mapping().unwrap(), "v").unwrap()
            })
            .collect();
        assert_eq!(values[0], "s3\"cr\\et");
        assert_eq!(values[1], "--password=p'w");
        assert_eq!(values[2], "pfxApass");
        assert!(restored.contains("\"token-broker: dropped\""));
        // Spelled as the file spelled them, where the spelling is one of a kind.
        assert!(restored.contains("'--password=p''w'"), "{restored}");
        assert!(restored.contains(r#""s3\"cr\\et""#), "{restored}");
        assert_eq!(
            restored
                .replace(r#""pfxApass""#, r#""pfx\u0041pass""#)
                .replace("\"token-broker: dropped\"", "legacy-access-token"),
            FILE
        );
        let gone = restore(&backup, &|_| Ok(None)).unwrap_err();
        assert!(
            gone.contains("no longer holds client-secret/0123456789ab"),
            "{gone}"
        );
    }
}
