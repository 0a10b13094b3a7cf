//! Getting a session a new access token: single-flight per session, capped across sessions,
//! backed off after passing failures, stopped after refusals. Whatever the login mode, the same
//! path: redeem the session's grantor (a refresh token, a client secret or certificate, a
//! federated token, the managed identity, the Azure CLI).
//!
//! Every refresh runs in a task of its own. Its caller (a kubectl run, through the shim) may
//! give up halfway, and an IdP that rotates refresh tokens may by then have issued one that
//! is the only one valid: the task runs on regardless, stores what the IdP gave and records
//! the outcome, so the next caller finds a fresh token instead of a refused session.

use std::sync::Arc;

use super::error::BrokerError;
use super::session::{Credentials, Failure, Grantor, Hold, Session};
use super::{Broker, EventKind, Reason};
use crate::identity::IdentityError;
use crate::identity::cli::CliRequest;
use crate::identity::credential::Supplied;
use crate::identity::managed_identity::ManagedIdentityId;
use crate::identity::token::{AccessToken, TokenSet};
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
    /// A refresh: the grant counts; a refresh token the store refuses stays in memory, is
    /// shown in status and is written again until the store takes it.
    BestEffort,
}

impl Broker {
    /// Gets `session` a new access token unless, once the refresh lock is ours, there is no
    /// longer a reason to. `supplied` are credentials from the caller's flags and environment.
    /// Runs in its own task: dropping this future stops the waiting, not the refresh.
    pub(super) async fn refresh_session(
        &self,
        session: &Arc<Session>,
        trigger: Trigger,
        supplied: &Supplied,
    ) -> Result<AccessToken, BrokerError> {
        let me = self.me().ok_or_else(Self::shutting_down)?;
        let session = session.clone();
        let supplied = supplied.clone();
        tokio::spawn(async move { me.refresh_now(&session, trigger, &supplied).await })
            .await
            .unwrap_or_else(|e| Err(BrokerError::Internal(format!("a refresh failed: {e}"))))
    }

    async fn refresh_now(
        &self,
        session: &Session,
        trigger: Trigger,
        supplied: &Supplied,
    ) -> Result<AccessToken, BrokerError> {
        let mut credentials = session.credentials.lock().await;
        let policy = self.policy();
        let now = self.clock.now();

        if trigger == Trigger::Request
            && let Some(token) = session.fresh_token(now, policy.min_remaining)
        {
            // Someone else refreshed while this caller waited for the lock.
            return Ok(token);
        }
        if self.take_supplied(session, &mut credentials, supplied) {
            session.lift_refusal();
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
        if credentials.grantor.is_none() && credentials.password.is_none() {
            let error = self.no_credentials(session);
            if session.needs_login(error.to_string()) {
                self.emit(
                    &session.id,
                    EventKind::LoginRequired,
                    Some(error.to_string()),
                );
            }
            return Err(error);
        }

        if !session.spec.pop_u.is_empty()
            && let Err(error) = self.pop_key(session).await
        {
            return Err(self.record_failure(session, error, None));
        }
        let result = {
            let _refreshing = session.begin_refresh();
            let permits = self.permits(policy.max_concurrent);
            let _permit = permits
                .acquire()
                .await
                .map_err(|_| BrokerError::Internal("the request limiter closed".into()))?;
            self.redeem(session, &credentials).await
        };

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
        credentials: &super::session::Credentials,
    ) -> Result<TokenSet, IdentityError> {
        let (grantor, password) = (credentials.grantor.as_ref(), credentials.password.as_ref());
        let spec = &session.spec;
        let mut target = spec.target();
        target.client_secret = credentials.target_secret();
        target.pop = session.pop_key.get().map(|key| key.req_cnf().to_string());
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
            Grantor::CiToken(credential) => {
                identity
                    .ci_token(&target, credential, &spec.service_connection_id)
                    .await
            }
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
                let dir = std::path::Path::new(&spec.azure_config_dir);
                identity
                    .from_cli(&CliRequest {
                        tool: *tool,
                        server_id: &spec.server_id,
                        tenant: &spec.tenant_id,
                        subscription: &spec.subscription,
                        config_dir: (!spec.azure_config_dir.is_empty()).then_some(dir),
                    })
                    .await
            }
        }
    }

    /// While a session backs off or waits for a login, a request gets the token that still
    /// works, or an error, and the IdP is not asked. `None` when the request may go ahead.
    fn held_back(
        &self,
        session: &Session,
        now: std::time::SystemTime,
    ) -> Option<Result<AccessToken, BrokerError>> {
        let why = match session.hold(now)? {
            Hold::Refused { why, codes } if session.spec.login_mode.keeps_refresh_token() => {
                BrokerError::LoginRequired {
                    spec: Box::new(session.spec.clone()),
                    why,
                    idp_codes: codes,
                }
            }
            // An application's credential was refused: only new credentials help.
            Hold::Refused { why, codes } => BrokerError::Refused {
                why,
                idp_codes: codes,
            },
            Hold::BackingOff {
                why,
                codes,
                retry_in,
            } => BrokerError::Unavailable {
                why,
                retry_in,
                idp_codes: codes,
            },
        };
        Some(session.usable_token(now).ok_or(why))
    }

    /// Records a failed refresh: passing failures back off, refusals (and rejected
    /// configurations) wait for the user.
    fn record_failure(
        &self,
        session: &Session,
        error: BrokerError,
        retry_after: Option<std::time::Duration>,
    ) -> BrokerError {
        tracing::warn!("refresh of session {} failed: {error}", session.id);
        let (failure, kind) = match error.reason() {
            Reason::LoginRequired | Reason::Config => (Failure::Refused, EventKind::LoginRequired),
            _ => (Failure::Passing { retry_after }, EventKind::RefreshFailed),
        };
        let backoff = session.failed(
            self.clock.now(),
            error.to_string(),
            error.idp_codes().to_vec(),
            failure,
            &self.policy(),
        );
        if let Some((attempt, delay)) = backoff {
            tracing::info!(
                "session {}: retrying in {} s (attempt {attempt})",
                session.id,
                delay.as_secs()
            );
        }
        self.emit(&session.id, kind, Some(error.to_string()));
        error
    }

    /// Installs the result of a grant: a rotated refresh token goes to the secret store first,
    /// then memory takes the new tokens. A refresh whose new refresh token the store refuses
    /// still counts: the token is kept in memory (the old one may be dead already, at an IdP
    /// that rotates strictly) and written again until the store takes it.
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
        // Never hand out an expired token, even a brand-new one. A login fails whole; a refresh
        // still keeps the refresh token that came with it (below): the issuer has taken the
        // old one, and one that rotates strictly will not take it again.
        let arrived_expired = access.remaining(now).is_zero();
        if arrived_expired && persist == Persist::Required {
            return Err(arrived_expired_error());
        }
        let keeps_refresh_token = session.spec.login_mode.keeps_refresh_token();
        let mut unsaved = None;
        if let Some(new_refresh) = refresh.as_ref().filter(|_| keeps_refresh_token) {
            match self
                .save_refresh_token(session, new_refresh, account.as_deref())
                .await
            {
                Ok(()) => {}
                Err(e) if persist == Persist::Required => return Err(e),
                Err(e) => {
                    tracing::warn!(
                        "session {}: the rotated refresh token is in memory only until the \
                         store takes it: {e}",
                        session.id
                    );
                    unsaved = Some(e.to_string());
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
        if arrived_expired {
            if let Some(why) = unsaved {
                session.unsaved_result(now, Err(why));
            }
            return Err(arrived_expired_error());
        }
        session.accepted(now, access.clone(), account, refresh_in, unsaved);
        Ok(access)
    }

    /// Writes a rotated refresh token the store refused before, now that it may take it.
    /// Under the refresh lock, so that no newer token can be stored in between and then
    /// overwritten with this one.
    pub(super) async fn save_unsaved(&self, session: &Session) {
        let credentials = session.credentials.lock().await;
        if !session.has_unsaved() {
            return;
        }
        let result = match credentials.refresh_token() {
            Some(token) => self.save_refresh_token(session, token, None).await,
            // Logged out, or no longer a refresh token session: nothing left to store.
            None => Ok(()),
        };
        match result {
            Ok(()) => {
                tracing::info!("session {}: its refresh token is stored now", session.id);
                session.unsaved_result(self.clock.now(), Ok(()));
            }
            Err(e) => session.unsaved_result(self.clock.now(), Err(e.to_string())),
        }
    }

    /// Writes every rotated refresh token the store has refused so far: on shutdown, the last
    /// chance before memory lets go of them. Says which it could not.
    pub async fn save_all_unsaved(&self) {
        for session in self.all_sessions() {
            if session.has_unsaved() {
                self.save_unsaved(&session).await;
                if session.has_unsaved() {
                    tracing::error!(
                        "session {}: its refresh token could not be stored and is lost with \
                         this process; it needs a new login",
                        session.id
                    );
                }
            }
        }
    }

    /// A prompt-free login: the first token with the given credentials, which are then kept
    /// as a login keeps them (a client secret and a certificate password always, a ROPC
    /// password when asked to).
    pub(super) async fn login_without_prompt(
        &self,
        session: &Arc<Session>,
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

/// A grant whose access token had no life left when brokerd read it: this machine's clock is
/// ahead of the issuer's, or it stepped (or the machine slept) while the request was out.
fn arrived_expired_error() -> BrokerError {
    BrokerError::Identity {
        source: IdentityError::Malformed(
            "the identity provider issued an access token that has already expired \
             (check this machine's clock)"
                .into(),
        ),
    }
}
