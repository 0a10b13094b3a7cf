//! The session index: a small JSON file (mode 0600) that lets a restarted brokerd know its
//! sessions and find their refresh tokens in the keyring. It holds no secret.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const FORMAT_VERSION: u32 = 1;

/// One session as the index records it: what names it, and who signed in.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct IndexedSession {
    pub id: String,
    #[serde(default)]
    pub environment: String,
    #[serde(default)]
    pub authority_host: String,
    pub tenant_id: String,
    pub client_id: String,
    pub server_id: String,
    pub login_mode: String,
    #[serde(default)]
    pub account: Option<String>,
    /// When the user last signed in (Unix seconds).
    #[serde(default)]
    pub logged_in_at: i64,
    /// When the refresh token was last redeemed (Unix seconds); keepalives count from it.
    #[serde(default)]
    pub last_refresh_at: i64,
    /// ROPC's user.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    /// Managed identity's user-assigned resource id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub identity_resource_id: String,
    /// The account a device code or interactive session signs in as (`--login-hint`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub login_hint: String,
    /// Interactive: `--redirect-url`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub redirect_url: String,
    /// Azure CLI: `--subscription`, and its configuration directory.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subscription: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub azure_config_dir: String,
    /// Azure Pipelines: the service connection.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_connection_id: String,
    /// Any OpenID Connect issuer: the issuer, extra scopes, what is served, extra parameters.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub oidc_issuer_url: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub oidc_extra_scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oidc_use_access_token: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub oidc_auth_params: Vec<String>,
    /// Certificates trusted for an OpenID Connect issuer besides the system's (PEM).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub oidc_certificate_authority: String,
    /// Proof-of-possession sessions: `u=<ARM id>` of the cluster that started it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pop_claims: String,
    /// A service principal's certificate file (its password, if any, is in the keyring).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub certificate_path: String,
    /// Workload identity's federated token file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub federated_token_file: String,
    /// Served on the forwarding socket (`brokerctl forward allow`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_forwarding: bool,
}

#[derive(Debug, Deserialize, Serialize)]
struct IndexFile {
    version: u32,
    sessions: Vec<IndexedSession>,
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cannot read the session index {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the session index {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// An index file's records, or why it is not one (no part of the text is quoted: it is not
/// supposed to hold secrets, but a hand-edited one might).
pub fn parse(bytes: &[u8]) -> Result<Vec<IndexedSession>, String> {
    match serde_json::from_slice::<IndexFile>(bytes) {
        Ok(file) if file.version == FORMAT_VERSION => Ok(file.sessions),
        Ok(file) => Err(format!("it has format version {}", file.version)),
        Err(e) => Err(format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        )),
    }
}

/// The index file's location and how to read and replace it.
#[derive(Clone, Debug)]
pub struct SessionIndex {
    path: PathBuf,
}

impl SessionIndex {
    pub fn new(state_dir: &Path) -> Self {
        SessionIndex {
            path: state_dir.join("sessions.json"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the index. A missing file is an empty index. A file that cannot be parsed is moved
    /// aside (never deleted) and reported, and the broker starts with no sessions: the refresh
    /// tokens stay in the keyring and a new login finds them again.
    pub fn load(&self) -> Result<Vec<IndexedSession>, IndexError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(IndexError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        match parse(&bytes) {
            Ok(sessions) => Ok(sessions),
            Err(why) => {
                self.set_aside(&why);
                Ok(Vec::new())
            }
        }
    }

    fn set_aside(&self, why: &str) {
        let aside = self.path.with_extension(format!(
            "json.unreadable-{}",
            crate::clock::unix_seconds(std::time::SystemTime::now())
        ));
        match fs::rename(&self.path, &aside) {
            Ok(()) => tracing::error!(
                "the session index {} is unreadable ({why}); moved it to {} and starting with no \
                 sessions",
                self.path.display(),
                aside.display()
            ),
            Err(e) => tracing::error!(
                "the session index {} is unreadable ({why}) and could not be moved aside: {e}",
                self.path.display()
            ),
        }
    }

    /// Replaces the index atomically: a crash leaves the old file or the new one, never half.
    pub fn save(&self, sessions: &[IndexedSession]) -> Result<(), IndexError> {
        let write_error = |source| IndexError::Write {
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        crate::paths::create_private_dir(dir).map_err(write_error)?;
        let file = IndexFile {
            version: FORMAT_VERSION,
            sessions: sessions.to_vec(),
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| write_error(e.into()))?;
        // tempfile creates the file 0600 in the same directory, so the rename is atomic.
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(write_error)?;
        tmp.write_all(&json).map_err(write_error)?;
        tmp.as_file().sync_all().map_err(write_error)?;
        crate::paths::make_private(tmp.as_file()).map_err(write_error)?;
        tmp.persist(&self.path).map_err(|e| write_error(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn session(id: &str) -> IndexedSession {
        IndexedSession {
            id: id.into(),
            environment: "AzurePublicCloud".into(),
            authority_host: String::new(),
            tenant_id: "t".into(),
            client_id: "c".into(),
            server_id: "s".into(),
            login_mode: "devicecode".into(),
            account: Some("alice@contoso.example".into()),
            logged_in_at: 1,
            last_refresh_at: 2,
            username: String::new(),
            identity_resource_id: String::new(),
            certificate_path: "/etc/app/cert.pem".into(),
            federated_token_file: String::new(),
            allow_forwarding: false,
            login_hint: String::new(),
            redirect_url: String::new(),
            subscription: String::new(),
            azure_config_dir: String::new(),
            service_connection_id: String::new(),
            oidc_issuer_url: String::new(),
            oidc_extra_scopes: Vec::new(),
            oidc_use_access_token: false,
            oidc_auth_params: Vec::new(),
            pop_claims: String::new(),
            oidc_certificate_authority: String::new(),
        }
    }

    #[test]
    fn round_trips_with_private_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let index = SessionIndex::new(&dir.path().join("state"));
        assert_eq!(index.load().unwrap(), vec![]);
        index.save(&[session("a"), session("b")]).unwrap();
        assert_eq!(index.load().unwrap(), vec![session("a"), session("b")]);
        assert_eq!(fs::metadata(index.path()).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            fs::metadata(dir.path().join("state")).unwrap().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn an_unreadable_index_is_moved_aside_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let index = SessionIndex::new(dir.path());
        fs::write(index.path(), b"{not json").unwrap();
        assert_eq!(index.load().unwrap(), vec![]);
        let kept: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert!(kept[0].starts_with("sessions.json.unreadable-"), "{kept:?}");
        assert_eq!(
            fs::read(dir.path().join(&kept[0])).unwrap(),
            b"{not json".to_vec()
        );
    }
}
