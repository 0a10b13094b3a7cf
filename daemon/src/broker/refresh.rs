//! Redeeming a session's refresh token: single-flight per session, capped across sessions,
//! backed off after passing failures, stopped after refusals.

use std::time::SystemTime;

use super::error::BrokerError;
use super::persist::refresh_token_key;
use super::session::{Backoff, RefreshSlot, Session, backoff_delay};
use super::{Broker, Reason, draw_jitter};
use crate::identity::IdentityError;
use crate::identity::token::{AccessToken, RefreshToken, TokenSet};

/// Why a refresh was asked for; it decides what may stop it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Trigger {
    /// A GetToken found no fresh token. Honours backoff and refusals: while either holds, the
    /// caller gets the token that still works, or an error, without a request to the IdP.
    Request,
    /// The schedule says it is time. Does nothing if, once the lock is held, it no longer is.
    Scheduled,
    /// `brokerctl refresh`: tries now, whatever the backoff or an earlier refusal.
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
    /// Refreshes `session` unless, once the refresh lock is ours, there is no longer a reason to.
    pub(super) async fn refresh_session(
        &self,
        session: &Session,
        trigger: Trigger,
    ) -> Result<AccessToken, BrokerError> {
        let mut slot = session.refresh.lock().await;
        let policy = self.policy();
        let now = self.clock.now();

        match trigger {
            Trigger::Request => {
                // Someone else may have refreshed while this caller waited for the lock.
                if let Some(token) = session.fresh_token(now, policy.min_remaining) {
                    return Ok(token);
                }
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

        if let RefreshSlot::NotLoaded = *slot {
            match self.load_secret(refresh_token_key(&session.id)).await {
                Ok(stored) => *slot = RefreshSlot::Loaded(stored.map(RefreshToken::new)),
                // A locked or missing keyring may come back: retry with backoff.
                Err(error) => return Err(self.record_failure(session, error, None)),
            }
        }
        let RefreshSlot::Loaded(Some(refresh_token)) = &*slot else {
            let why = format!(
                "no refresh token for this session in {}",
                self.store.backend()
            );
            let mut meta = session.meta();
            meta.login_required = true;
            meta.last_error = Some(why.clone());
            meta.last_error_codes.clear();
            drop(meta);
            return Err(BrokerError::login_required(&session.spec, why));
        };
        let refresh_token = refresh_token.clone();

        session.meta().refreshing = true;
        let result = {
            let permits = self.permits(policy.max_concurrent);
            let _permit = permits
                .acquire()
                .await
                .map_err(|_| BrokerError::Internal("the request limiter closed".into()))?;
            self.identity
                .refresh(&session.spec.target(), &refresh_token)
                .await
        };
        session.meta().refreshing = false;

        let outcome = match result {
            Ok(tokens) => self
                .accept_tokens(session, &mut slot, tokens, Persist::BestEffort)
                .await
                .map_err(|error| self.record_failure(session, error, None)),
            Err(error) => {
                let retry_after = error.retry_after();
                let error = BrokerError::from_refresh(&session.spec, error);
                Err(self.record_failure(session, error, retry_after))
            }
        };
        drop(slot);
        self.wake_scheduler();
        if outcome.is_ok() {
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
            BrokerError::LoginRequired {
                spec: Box::new(session.spec.clone()),
                why,
                idp_codes: meta.last_error_codes.clone(),
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
        retry_after: Option<std::time::Duration>,
    ) -> BrokerError {
        tracing::warn!("refresh of session {} failed: {error}", session.id);
        let policy = self.policy();
        let now = self.clock.now();
        let mut meta = session.meta();
        meta.failures += 1;
        meta.last_error = Some(error.to_string());
        meta.last_error_codes = error.idp_codes().to_vec();
        match error.reason() {
            Reason::LoginRequired | Reason::Config => {
                meta.login_required = true;
                meta.backoff = None;
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
            }
        }
        error
    }

    /// Installs the result of a grant: a rotated refresh token goes to the secret store first,
    /// then memory takes the new tokens.
    pub(super) async fn accept_tokens(
        &self,
        session: &Session,
        slot: &mut RefreshSlot,
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
        let mut store_error = None;
        if let Some(new_refresh) = &refresh {
            let account_name = account
                .clone()
                .or_else(|| session.meta().account.clone())
                .unwrap_or_else(|| "unknown account".into());
            let label = format!(
                "token-broker refresh token: {account_name}, {}",
                session.spec.describe()
            );
            let saved = self
                .save_secret(refresh_token_key(&session.id), label, new_refresh.clone())
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
        if let Some(new_refresh) = refresh {
            *slot = RefreshSlot::Loaded(Some(new_refresh));
        } else if persist == Persist::Required {
            // A login without a refresh token serves its access token until it expires.
            *slot = RefreshSlot::Loaded(None);
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
}
