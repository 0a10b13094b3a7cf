//! A session's credentials through their life: taken from a caller (the shim passes on what
//! kubectl's environment holds), read back from the secret store after a restart, kept there
//! when a login (or a converted kubeconfig) gives them, and named in the error when there are
//! none. The refresh itself (refresh.rs) only redeems what this module hands it.

use super::Broker;
use super::error::BrokerError;
use super::persist::SecretKind;
use super::session::{Credentials, Grantor, Session};
use crate::identity::ci_tokens::{CiCredential, CiSystem};
use crate::identity::cli::Tool;
use crate::identity::credential::{CertificateSource, Supplied, same_secret};
use crate::identity::token::RefreshToken;
use crate::spec::LoginMode;

impl Broker {
    /// Takes what the caller supplied into the session's credentials. True when that replaced
    /// a different credential (so an earlier refusal no longer holds).
    pub(super) fn take_supplied(
        &self,
        session: &Session,
        credentials: &mut Credentials,
        supplied: &Supplied,
    ) -> bool {
        let secret_changed = user_session_of_a_confidential_client(session)
            && supplied.client_secret.is_some()
            && !same_secret(&credentials.client_secret, &supplied.client_secret);
        if secret_changed {
            credentials.client_secret = supplied.client_secret.clone();
        }
        let new = match session.spec.login_mode {
            LoginMode::ServicePrincipal => {
                if let Some(certificate) = &supplied.certificate {
                    session.set_certificate_path(certificate.path.clone());
                    Some(Grantor::ClientCertificate(certificate.clone()))
                } else {
                    supplied.client_secret.clone().map(Grantor::ClientSecret)
                }
            }
            // GitHub Actions' token wins over a file when the job has one, as in kubelogin.
            LoginMode::WorkloadIdentity => match ci_of(supplied, CiSystem::GitHubActions) {
                Some(github) => Some(Grantor::CiToken(github)),
                None => supplied.federated_token_file.clone().map(|file| {
                    session.set_federated_token_file(file.clone());
                    self.watch_federated_file(&file);
                    Grantor::FederatedToken(file)
                }),
            },
            LoginMode::AzurePipelines => {
                ci_of(supplied, CiSystem::AzurePipelines).map(Grantor::CiToken)
            }
            LoginMode::Ropc => {
                let changed = supplied.password.is_some()
                    && !same_secret(&credentials.password, &supplied.password);
                if changed {
                    credentials.password = supplied.password.clone();
                }
                return changed || secret_changed;
            }
            LoginMode::DeviceCode
            | LoginMode::Interactive
            | LoginMode::ManagedIdentity
            | LoginMode::AzureCli
            | LoginMode::AzureDeveloperCli => None,
        };
        let Some(new) = new else {
            return secret_changed;
        };
        let changed = !same_grantor(credentials.grantor.as_ref(), &new);
        credentials.grantor = Some(new);
        credentials.loaded = true;
        changed || secret_changed
    }

    /// Reads what a restarted brokerd needs from the secret store and the index.
    pub(super) async fn load_credentials(
        &self,
        session: &Session,
        credentials: &mut Credentials,
    ) -> Result<(), BrokerError> {
        let id = &session.id;
        let mode = session.spec.login_mode;
        if user_session_of_a_confidential_client(session) && credentials.client_secret.is_none() {
            credentials.client_secret = self.load_secret(SecretKind::ClientSecret.key(id)).await?;
        }
        if credentials.grantor.is_some() {
            return Ok(());
        }
        let remembered = session.remembered();
        credentials.grantor = match mode {
            LoginMode::DeviceCode | LoginMode::Interactive | LoginMode::Ropc => self
                .load_secret(SecretKind::RefreshToken.key(id))
                .await?
                .map(|rt| Grantor::RefreshToken(RefreshToken::new(rt))),
            LoginMode::ServicePrincipal => match remembered.certificate_path {
                Some(path) => Some(Grantor::ClientCertificate(CertificateSource {
                    path,
                    password: self
                        .load_secret(SecretKind::CertificatePassword.key(id))
                        .await?,
                })),
                None => self
                    .load_secret(SecretKind::ClientSecret.key(id))
                    .await?
                    .map(Grantor::ClientSecret),
            },
            LoginMode::WorkloadIdentity => {
                let file = remembered.federated_token_file;
                if let Some(file) = &file {
                    self.watch_federated_file(file);
                }
                file.map(Grantor::FederatedToken)
            }
            LoginMode::ManagedIdentity => Some(Grantor::ManagedIdentity),
            LoginMode::AzureCli => {
                self.watch_azure_config(&session.spec.azure_config_dir);
                Some(Grantor::Cli(Tool::AzureCli))
            }
            LoginMode::AzureDeveloperCli => Some(Grantor::Cli(Tool::AzureDeveloperCli)),
            // The job's token is not kept: a restarted brokerd waits for the next caller.
            LoginMode::AzurePipelines => None,
        };
        if mode == LoginMode::Ropc && credentials.password.is_none() {
            credentials.password = self.load_secret(SecretKind::Password.key(id)).await?;
        }
        Ok(())
    }

    /// The error for a session with nothing to redeem, saying what would help.
    pub(super) fn no_credentials(&self, session: &Session) -> BrokerError {
        let spec = &session.spec;
        match spec.login_mode {
            LoginMode::ServicePrincipal => BrokerError::MissingCredential {
                what: format!(
                    "no client secret or certificate for service principal {} in tenant {}",
                    spec.client_id, spec.tenant_id
                ),
                how: "set AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH, or store the \
                      secret with `brokerctl login --login spn` (it reads it from stdin)"
                    .into(),
            },
            LoginMode::WorkloadIdentity => BrokerError::MissingCredential {
                what: format!("no federated token for {}", spec.client_id),
                how: "set AZURE_FEDERATED_TOKEN_FILE (the pod's projected service account \
                      token), or run in a GitHub Actions job with `permissions: id-token: write`"
                    .into(),
            },
            LoginMode::AzurePipelines => BrokerError::MissingCredential {
                what: format!(
                    "no Azure Pipelines credential for service connection {}",
                    spec.service_connection_id
                ),
                how: "run it in a pipeline step that maps SYSTEM_ACCESSTOKEN into its \
                      environment (SYSTEM_OIDCREQUESTURI is set by Azure Pipelines)"
                    .into(),
            },
            LoginMode::Ropc => BrokerError::login_required(
                &spec.clone(),
                "no refresh token, and no password to sign in with (set AZURE_PASSWORD, or run \
                 `brokerctl login --login ropc`)",
            ),
            LoginMode::DeviceCode
            | LoginMode::Interactive
            | LoginMode::ManagedIdentity
            | LoginMode::AzureCli
            | LoginMode::AzureDeveloperCli => BrokerError::login_required(
                spec,
                format!(
                    "no refresh token for this session in {}",
                    self.store.backend()
                ),
            ),
        }
    }

    /// Keeps `supplied` for `session` in the secret store, as a login would, without asking
    /// the IdP: for secrets moved out of a kubeconfig.
    pub(super) async fn keep_credentials(
        &self,
        session: &Session,
        supplied: &Supplied,
    ) -> Result<(), BrokerError> {
        let mut credentials = session.credentials.lock().await;
        self.take_supplied(session, &mut credentials, supplied);
        drop(credentials);
        self.save_supplied(session, supplied, true).await
    }

    /// Writes what a login keeps: a client secret and a certificate password always, a ROPC
    /// password when `remember_password`.
    pub(super) async fn save_supplied(
        &self,
        session: &Session,
        supplied: &Supplied,
        remember_password: bool,
    ) -> Result<(), BrokerError> {
        let id = &session.id;
        let label = |what: &str| format!("token-broker {what}: {}", session.spec.describe());
        if session.spec.login_mode == LoginMode::ServicePrincipal
            || user_session_of_a_confidential_client(session)
        {
            if let Some(secret) = &supplied.client_secret
                && supplied.certificate.is_none()
            {
                self.save_secret(
                    SecretKind::ClientSecret.key(id),
                    label("client secret"),
                    secret.clone(),
                )
                .await?;
            }
            if let Some(password) = supplied
                .certificate
                .as_ref()
                .and_then(|c| c.password.clone())
            {
                self.save_secret(
                    SecretKind::CertificatePassword.key(id),
                    label("certificate password"),
                    password,
                )
                .await?;
            }
        }
        if session.spec.login_mode == LoginMode::Ropc
            && remember_password
            && let Some(password) = &supplied.password
        {
            self.save_secret(
                SecretKind::Password.key(id),
                label("password"),
                password.clone(),
            )
            .await?;
        }
        Ok(())
    }

    /// Stores `session`'s refresh token, with the label keyring UIs show.
    pub(super) async fn save_refresh_token(
        &self,
        session: &Session,
        token: &RefreshToken,
        account: Option<&str>,
    ) -> Result<(), BrokerError> {
        let account = account
            .map(str::to_string)
            .or_else(|| session.account())
            .unwrap_or_else(|| "unknown account".into());
        let label = format!(
            "token-broker refresh token: {account}, {}",
            session.spec.describe()
        );
        self.save_secret(
            SecretKind::RefreshToken.key(&session.id),
            label,
            token.secret().clone(),
        )
        .await
    }
}

/// An OpenID Connect session that signs a user in (not client credentials): its client secret,
/// when it has one, goes with every grant rather than being the grant.
fn user_session_of_a_confidential_client(session: &Session) -> bool {
    session.spec.oidc.is_some() && session.spec.login_mode != LoginMode::ServicePrincipal
}

/// The caller's CI credential, if it is `system`'s.
fn ci_of(supplied: &Supplied, system: CiSystem) -> Option<CiCredential> {
    supplied.ci.clone().filter(|ci| ci.system == system)
}

/// Whether two grantors are the same credential (secrets compared by value).
fn same_grantor(old: Option<&Grantor>, new: &Grantor) -> bool {
    match (old, new) {
        (Some(Grantor::ClientSecret(a)), Grantor::ClientSecret(b)) => {
            same_secret(&Some(a.clone()), &Some(b.clone()))
        }
        (Some(Grantor::ClientCertificate(a)), Grantor::ClientCertificate(b)) => a == b,
        (Some(Grantor::FederatedToken(a)), Grantor::FederatedToken(b)) => a == b,
        (Some(Grantor::CiToken(a)), Grantor::CiToken(b)) => a == b,
        _ => false,
    }
}
