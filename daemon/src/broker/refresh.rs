//! Getting a session a new access token: single-flight per session, capped across sessions,
//! backed off after passing failures, stopped after refusals. Whatever the login mode, the same
//! path: redeem the session's grantor (a refresh token, a client secret or certificate, a
//! federated token, the managed identity, the Azure CLI).

use std::time::{Duration, SystemTime};

use secrecy::SecretString;

use super::error::BrokerError;
use super::persist::SecretKind;
use super::session::{Backoff, Credentials, Grantor, Session, backoff_delay};
use super::{Broker, EventKind, Reason, draw_jitter};
use crate::identity::IdentityError;
use crate::identity::cli::Tool;
use crate::identity::credential::{CertificateSource, Supplied, same_secret};
use crate::identity::managed_identity::ManagedIdentityId;
use crate::identity::token::{AccessToken, RefreshToken, TokenSet};
use crate::spec::LoginMode;

/// Why a refresh was asked for; it decides what may stop it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Trigger {
    /// A GetToken found no fresh token. Honours backoff and refusals: while either holds, the
    /// caller gets the token that still works, or an error, without a request to the IdP.
    Request,
    /// The schedule says it is time. Does nothing if, once the lock is held, it no longer is.
    Scheduled,
    /// `brokerctl refresh` or a non-interactive login: tries now, whatever the backoff or an
    /// earlier refusal.
    Forced,
}

/// Whether the store must keep a new refresh token for the grant to count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Persist {
    /// A login: a refresh token that cannot be kept makes it no login at all.
    Required,
    /// A refresh: the old refresh token stays valid at Entra and in the store, so a failed
    /// write is reported (in the log and in status) and the new token kept in memory.
    BestEffort,
}

impl Broker {
    /// Gets `session` a new access token unless, once the refresh lock is ours, there is no
    /// longer a reason to. `supplied` are credentials from the caller's flags and environment.
    pub(super) async fn refresh_session(
        &self,
        session: &Session,
        trigger: Trigger,
        supplied: &Supplied,
    ) -> Result<AccessToken, BrokerError> {
        let mut credentials = session.refresh.lock().await;
        let policy = self.policy();
        let now = self.clock.now();

        if trigger == Trigger::Request
            && let Some(token) = session.fresh_token(now, policy.min_remaining)
        {
            // Someone else refreshed while this caller waited for the lock.
            return Ok(token);
        }
        if self.take_supplied(session, &mut credentials, supplied) {
            // New credentials deserve a try, whatever failed with the old ones.
            let mut meta = session.meta();
            meta.login_required = false;
            meta.backoff = None;
        }
        match trigger {
            Trigger::Request => {
                if let Some(held) = self.held_back(session, now) {
                    return held;
                }
            }
            Trigger::Scheduled => {
                if session.next_refresh(now, &policy).is_none_or(|at| at > now) {
                    return session
                        .usable_token(now)
                        .ok_or_else(|| BrokerError::Internal("nothing to refresh".into()));
                }
            }
            Trigger::Forced => {}
        }

        if !credentials.loaded {
            match self.load_credentials(session, &mut credentials).await {
                Ok(()) => credentials.loaded = true,
                // A locked or missing keyring may come back: retry with backoff.
                Err(error) => return Err(self.record_failure(session, error, None)),
            }
        }
        let grantor = credentials.grantor.clone();
        if grantor.is_none() && credentials.password.is_none() {
            let error = self.no_credentials(session);
            let newly = {
                let mut meta = session.meta();
                let newly = !meta.login_required;
                meta.login_required = true;
                meta.last_error = Some(error.to_string());
                meta.last_error_codes.clear();
                newly
            };
            if newly {
                self.emit(
                    &session.id,
                    EventKind::LoginRequired,
                    Some(error.to_string()),
                );
            }
            return Err(error);
        }

        session.meta().refreshing = true;
        let result = {
            let permits = self.permits(policy.max_concurrent);
            let _permit = permits
                .acquire()
                .await
                .map_err(|_| BrokerError::Internal("the request limiter closed".into()))?;
            self.redeem(session, grantor.as_ref(), credentials.password.as_ref())
                .await
        };
        session.meta().refreshing = false;

        let outcome = match result {
            Ok(tokens) => self
                .accept_tokens(session, &mut credentials, tokens, Persist::BestEffort)
                .await
                .map_err(|error| self.record_failure(session, error, None)),
            Err(error) => {
                let retry_after = error.retry_after();
                let error = BrokerError::from_refresh(&session.spec, error);
                Err(self.record_failure(session, error, retry_after))
            }
        };
        drop(credentials);
        self.wake_scheduler();
        if outcome.is_ok() {
            self.emit(&session.id, EventKind::Refreshed, None);
            self.save_index_soon();
        }
        match outcome {
            Ok(token) => Ok(token),
            // A token that still works is better than an error, whatever went wrong.
            Err(error) => match session.usable_token(self.clock.now()) {
                Some(token) if trigger != Trigger::Forced => Ok(token),
                _ => Err(error),
            },
        }
    }

    /// Redeems a grantor. For ROPC a refused (or missing) refresh token is followed by one
    /// password sign-in, when the password is known.
    async fn redeem(
        &self,
        session: &Session,
        grantor: Option<&Grantor>,
        password: Option<&SecretString>,
    ) -> Result<TokenSet, IdentityError> {
        let spec = &session.spec;
        let target = spec.target();
        let identity = &self.identity;
        let sign_in_with_password = || async {
            match password {
                Some(password) if spec.login_mode == LoginMode::Ropc => {
                    identity.password(&target, &spec.username, password).await
                }
                _ => Err(IdentityError::LoginFailed(
                    "no credential to sign in with".into(),
                )),
            }
        };
        let Some(grantor) = grantor else {
            return sign_in_with_password().await;
        };
        match grantor {
            Grantor::RefreshToken(rt) => match identity.refresh(&target, rt).await {
                Err(e)
                    if password.is_some()
                        && e.class() == crate::identity::ErrorClass::LoginRequired =>
                {
                    sign_in_with_password().await
                }
                result => result,
            },
            Grantor::ClientSecret(secret) => identity.client_secret(&target, secret).await,
            Grantor::ClientCertificate(source) => {
                identity.client_certificate(&target, source).await
            }
            Grantor::FederatedToken(file) => identity.federated(&target, file).await,
            Grantor::ManagedIdentity => {
                let id = if !spec.identity_resource_id.is_empty() {
                    ManagedIdentityId::ResourceId(&spec.identity_resource_id)
                } else if !spec.client_id.is_empty() {
                    ManagedIdentityId::ClientId(&spec.client_id)
                } else {
                    ManagedIdentityId::SystemAssigned
                };
                identity.managed_identity(&spec.server_id, id).await
            }
            Grantor::Cli(tool) => {
                identity
                    .from_cli(*tool, &spec.server_id, &spec.tenant_id)
                    .await
            }
        }
    }

    /// Takes what the caller supplied into the session's credentials. True when that replaced
    /// a different credential (so an earlier refusal no longer holds).
    fn take_supplied(
        &self,
        session: &Session,
        credentials: &mut Credentials,
        supplied: &Supplied,
    ) -> bool {
        let new = match session.spec.login_mode {
            LoginMode::ServicePrincipal => {
                if let Some(certificate) = &supplied.certificate {
                    session.meta().certificate_path = Some(certificate.path.clone());
                    Some(Grantor::ClientCertificate(certificate.clone()))
                } else {
                    supplied.client_secret.clone().map(Grantor::ClientSecret)
                }
            }
            LoginMode::WorkloadIdentity => supplied.federated_token_file.clone().map(|file| {
                session.meta().federated_token_file = Some(file.clone());
                self.watch_federated_file(&file);
                Grantor::FederatedToken(file)
            }),
            LoginMode::Ropc => {
                let changed = supplied.password.is_some()
                    && !same_secret(&credentials.password, &supplied.password);
                if changed {
                    credentials.password = supplied.password.clone();
                }
                return changed;
            }
            _ => None,
        };
        let Some(new) = new else {
            return false;
        };
        let changed = !same_grantor(credentials.grantor.as_ref(), &new);
        credentials.grantor = Some(new);
        credentials.loaded = true;
        changed
    }

    /// Reads what a restarted brokerd needs from the secret store and the index.
    async fn load_credentials(
        &self,
        session: &Session,
        credentials: &mut Credentials,
    ) -> Result<(), BrokerError> {
        let id = &session.id;
        let mode = session.spec.login_mode;
        if credentials.grantor.is_some() {
            return Ok(());
        }
        credentials.grantor = match mode {
            LoginMode::DeviceCode | LoginMode::Interactive | LoginMode::Ropc => self
                .load_secret(SecretKind::RefreshToken.key(id))
                .await?
                .map(|rt| Grantor::RefreshToken(RefreshToken::new(rt))),
            LoginMode::ServicePrincipal => {
                let path = session.meta().certificate_path.clone();
                match path {
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
                }
            }
            LoginMode::WorkloadIdentity => {
                let file = session.meta().federated_token_file.clone();
                if let Some(file) = &file {
                    self.watch_federated_file(file);
                }
                file.map(Grantor::FederatedToken)
            }
            LoginMode::ManagedIdentity => Some(Grantor::ManagedIdentity),
            LoginMode::AzureCli => Some(Grantor::Cli(Tool::AzureCli)),
            LoginMode::AzureDeveloperCli => Some(Grantor::Cli(Tool::AzureDeveloperCli)),
        };
        if mode == LoginMode::Ropc && credentials.password.is_none() {
            credentials.password = self.load_secret(SecretKind::Password.key(id)).await?;
        }
        Ok(())
    }

    /// The error for a session with nothing to redeem, saying what would help.
    fn no_credentials(&self, session: &Session) -> BrokerError {
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
                what: format!("no federated token file for {}", spec.client_id),
                how: "set AZURE_FEDERATED_TOKEN_FILE (the pod's projected service account token)"
                    .into(),
            },
            LoginMode::Ropc => BrokerError::login_required(
                &spec.clone(),
                "no refresh token, and no password to sign in with (set AZURE_PASSWORD, or run \
                 `brokerctl login --login ropc`)",
            ),
            _ => BrokerError::login_required(
                spec,
                format!(
                    "no refresh token for this session in {}",
                    self.store.backend()
                ),
            ),
        }
    }

    /// While a session backs off or waits for a login, a request gets the token that still
    /// works, or an error, and the IdP is not asked. `None` when the request may go ahead.
    fn held_back(
        &self,
        session: &Session,
        now: SystemTime,
    ) -> Option<Result<AccessToken, BrokerError>> {
        let meta = session.meta();
        let why = if meta.login_required {
            let why = meta
                .last_error
                .clone()
                .unwrap_or_else(|| "the session has no refresh token".into());
            if session.spec.login_mode.keeps_refresh_token() {
                BrokerError::LoginRequired {
                    spec: Box::new(session.spec.clone()),
                    why,
                    idp_codes: meta.last_error_codes.clone(),
                }
            } else {
                // An application's credential was refused: only new credentials help.
                BrokerError::Refused {
                    why,
                    idp_codes: meta.last_error_codes.clone(),
                }
            }
        } else if let Some(backoff) = meta.backoff.filter(|b| b.retry_at > now) {
            let wait = backoff.retry_at.duration_since(now).unwrap_or_default();
            BrokerError::Unavailable {
                why: meta
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "the identity provider failed".into()),
                retry_in: wait,
                idp_codes: meta.last_error_codes.clone(),
            }
        } else {
            return None;
        };
        drop(meta);
        Some(session.usable_token(now).ok_or(why))
    }

    /// Records a failed refresh: passing failures back off, refusals (and rejected
    /// configurations) wait for the user.
    fn record_failure(
        &self,
        session: &Session,
        error: BrokerError,
        retry_after: Option<Duration>,
    ) -> BrokerError {
        tracing::warn!("refresh of session {} failed: {error}", session.id);
        let policy = self.policy();
        let now = self.clock.now();
        let mut meta = session.meta();
        meta.failures += 1;
        meta.last_error = Some(error.to_string());
        meta.last_error_codes = error.idp_codes().to_vec();
        let kind = match error.reason() {
            Reason::LoginRequired | Reason::Config => {
                meta.login_required = true;
                meta.backoff = None;
                EventKind::LoginRequired
            }
            _ => {
                let failures = meta.backoff.map_or(0, |b| b.failures) + 1;
                let delay = backoff_delay(failures, &policy, retry_after, rand::random());
                meta.backoff = Some(Backoff {
                    failures,
                    retry_at: now + delay,
                });
                tracing::info!(
                    "session {}: retrying in {} s (attempt {failures})",
                    session.id,
                    delay.as_secs()
                );
                EventKind::RefreshFailed
            }
        };
        drop(meta);
        self.emit(&session.id, kind, Some(error.to_string()));
        error
    }

    /// Installs the result of a grant: a rotated refresh token goes to the secret store first,
    /// then memory takes the new tokens.
    pub(super) async fn accept_tokens(
        &self,
        session: &Session,
        credentials: &mut Credentials,
        tokens: TokenSet,
        persist: Persist,
    ) -> Result<AccessToken, BrokerError> {
        let now = self.clock.now();
        let TokenSet {
            access,
            refresh,
            refresh_in,
            account,
        } = tokens;
        if access.remaining(now).is_zero() {
            // Never hand out an expired token, even a brand-new one.
            return Err(BrokerError::Identity {
                source: IdentityError::Malformed(
                    "the identity provider issued an access token that has already expired \
                     (check this machine's clock)"
                        .into(),
                ),
            });
        }
        let keeps_refresh_token = session.spec.login_mode.keeps_refresh_token();
        let mut store_error = None;
        if let Some(new_refresh) = refresh.as_ref().filter(|_| keeps_refresh_token) {
            let account_name = account
                .clone()
                .or_else(|| session.meta().account.clone())
                .unwrap_or_else(|| "unknown account".into());
            let label = format!(
                "token-broker refresh token: {account_name}, {}",
                session.spec.describe()
            );
            let saved = self
                .save_secret(
                    SecretKind::RefreshToken.key(&session.id),
                    label,
                    new_refresh.secret().clone(),
                )
                .await;
            match saved {
                Ok(()) => {}
                Err(e) if persist == Persist::Required => return Err(e),
                Err(e) => {
                    tracing::warn!(
                        "session {}: the rotated refresh token stays in memory only, the old one \
                         in the store: {e}",
                        session.id
                    );
                    store_error = Some(format!("could not store the rotated refresh token: {e}"));
                }
            }
        }
        if keeps_refresh_token {
            match refresh {
                Some(new_refresh) => {
                    credentials.grantor = Some(Grantor::RefreshToken(new_refresh));
                    credentials.loaded = true;
                }
                // A login without a refresh token serves its access token until it expires.
                None if persist == Persist::Required => credentials.grantor = None,
                None => {}
            }
        }
        session.set_token(Some(access.clone()));
        let mut meta = session.meta();
        if account.is_some() {
            meta.account = account;
        }
        meta.last_refresh = Some(now);
        meta.issued_at = Some(now);
        meta.lifetime = Some(access.remaining(now));
        meta.refresh_in = refresh_in;
        meta.jitter = draw_jitter();
        meta.refreshes += 1;
        meta.last_error = store_error;
        meta.last_error_codes.clear();
        meta.login_required = false;
        meta.backoff = None;
        Ok(access)
    }

    /// Keeps `supplied` for `session` in the secret store, as a login would, without asking
    /// the IdP: for secrets moved out of a kubeconfig.
    pub(super) async fn keep_credentials(
        &self,
        session: &Session,
        supplied: &Supplied,
    ) -> Result<(), BrokerError> {
        let mut credentials = session.refresh.lock().await;
        self.take_supplied(session, &mut credentials, supplied);
        drop(credentials);
        self.save_supplied(session, supplied, true).await
    }

    /// Writes what a login keeps: a client secret and a certificate password always, a ROPC
    /// password when `remember_password`.
    async fn save_supplied(
        &self,
        session: &Session,
        supplied: &Supplied,
        remember_password: bool,
    ) -> Result<(), BrokerError> {
        let id = &session.id;
        let label = |what: &str| format!("token-broker {what}: {}", session.spec.describe());
        if session.spec.login_mode == LoginMode::ServicePrincipal {
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

    /// A prompt-free login: the first token with the given credentials, which are then kept
    /// as a login keeps them (a client secret and a certificate password always, a ROPC
    /// password when asked to).
    pub(super) async fn login_without_prompt(
        &self,
        session: &Session,
        supplied: &Supplied,
        remember_password: bool,
    ) -> Result<AccessToken, BrokerError> {
        let access = self
            .refresh_session(session, Trigger::Forced, supplied)
            .await?;
        self.save_supplied(session, supplied, remember_password)
            .await?;
        Ok(access)
    }
}

/// Whether two grantors are the same credential (secrets compared by value).
fn same_grantor(old: Option<&Grantor>, new: &Grantor) -> bool {
    match (old, new) {
        (Some(Grantor::ClientSecret(a)), Grantor::ClientSecret(b)) => {
            same_secret(&Some(a.clone()), &Some(b.clone()))
        }
        (Some(Grantor::ClientCertificate(a)), Grantor::ClientCertificate(b)) => a == b,
        (Some(Grantor::FederatedToken(a)), Grantor::FederatedToken(b)) => a == b,
        _ => false,
    }
}
