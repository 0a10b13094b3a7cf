//! Logins, single-flight per session: concurrent callers share one prompt (one device code,
//! one browser tab) and all get its result. A login that nobody finishes fails after the
//! configured timeout, freeing every waiter with a clear error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::Broker;
use super::error::BrokerError;
use super::refresh::Persist;
use broker_proto::text::printable;

use crate::identity::credential::Supplied;
use crate::identity::{LoginPrompt, UserLogin};
use crate::spec::{LoginMode, SessionId, SessionSpec};

/// How much longer than its own timeout a login may take before it is cut off: the identity
/// flows time out by themselves, this only guards against a stalled network.
const GRACE: Duration = Duration::from_secs(30);

/// The end of a successful login.
#[derive(Clone, Debug)]
pub struct LoggedIn {
    pub session_id: SessionId,
    pub account: Option<String>,
    pub expires_at: SystemTime,
}

/// What a login in flight has to tell its waiters so far.
#[derive(Clone, Debug, Default)]
struct Progress {
    prompt: Option<LoginPrompt>,
    outcome: Option<Result<LoggedIn, Arc<BrokerError>>>,
}

#[derive(Default)]
pub(super) struct Flights {
    running: Mutex<HashMap<SessionId, watch::Receiver<Progress>>>,
}

impl Broker {
    /// Signs the user of `spec` in, telling `prompt` what to show or open. If a login for the
    /// session is already running, this joins it instead of starting another.
    pub async fn login(
        &self,
        spec: &SessionSpec,
        supplied: &Supplied,
        remember_password: bool,
        prompt: &(dyn Fn(LoginPrompt) + Send + Sync),
    ) -> Result<LoggedIn, Arc<BrokerError>> {
        let mut progress = self.join_or_start_login(spec, supplied, remember_password);
        let mut shown = None;
        loop {
            let now = progress.borrow_and_update().clone();
            if now.prompt != shown {
                if let Some(p) = &now.prompt {
                    prompt(p.clone());
                }
                shown = now.prompt;
            }
            if let Some(outcome) = now.outcome {
                return outcome;
            }
            if progress.changed().await.is_err() {
                return Err(Arc::new(BrokerError::Internal(
                    "the login ended without a result".into(),
                )));
            }
        }
    }

    fn join_or_start_login(
        &self,
        spec: &SessionSpec,
        supplied: &Supplied,
        remember_password: bool,
    ) -> watch::Receiver<Progress> {
        let id = spec.id();
        let mut running = self
            .logins
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(progress) = running.get(&id) {
            tracing::info!("joining the login already running for session {id}");
            return progress.clone();
        }
        let (tx, rx) = watch::channel(Progress::default());
        running.insert(id.clone(), rx.clone());
        drop(running);

        let Some(me) = self.me() else {
            let _ = tx.send(Progress {
                prompt: None,
                outcome: Some(Err(Arc::new(BrokerError::Internal(
                    "brokerd is shutting down".into(),
                )))),
            });
            return rx;
        };
        let spec = spec.clone();
        let supplied = supplied.clone();
        tokio::spawn(async move {
            let limit = me.settings.get().login.timeout + GRACE;
            let tell = tx.clone();
            let show = move |prompt: LoginPrompt| {
                tell.send_modify(|p| p.prompt = Some(prompt));
            };
            let run = me.run_login(&spec, &supplied, remember_password, &show);
            let outcome = match tokio::time::timeout(limit, run).await {
                Ok(outcome) => outcome,
                Err(_) => Err(BrokerError::LoginFailed {
                    message: format!("no sign-in within {} s", limit.as_secs()),
                    idp_codes: Vec::new(),
                }),
            };
            if let Err(e) = &outcome {
                tracing::warn!("login for {} failed: {e}", spec.describe());
            }
            // Leave the map first, so that a caller arriving after this starts afresh.
            me.logins
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&spec.id());
            tx.send_modify(|p| p.outcome = Some(outcome.map_err(Arc::new)));
        });
        rx
    }

    /// One login, start to end: the identity flow, then the tokens into the session (creating
    /// it if needed) and the refresh token or client secret into the store.
    async fn run_login(
        &self,
        spec: &SessionSpec,
        supplied: &Supplied,
        remember_password: bool,
        prompt: &(dyn Fn(LoginPrompt) + Send + Sync),
    ) -> Result<LoggedIn, BrokerError> {
        tracing::info!("login started for {}", spec.describe());
        if spec.login_mode.prompts() {
            // Nobody should sign in for a refresh token that cannot be kept: ask the store
            // first, before any device code or browser tab.
            self.probe_store(super::persist::LOGIN_STORE_TIMEOUT)
                .await
                .map_err(|e| BrokerError::StoreUnusable {
                    why: e.to_string(),
                    backend: self.store.backend().to_string(),
                })?;
        }
        let (session, created) = self.session_for(spec);
        let accepted = if spec.login_mode.prompts() {
            // A confidential client's secret: the caller's, else the one kept for the session.
            let secret = {
                let mut credentials = session.credentials.lock().await;
                self.take_supplied(&session, &mut credentials, supplied);
                if credentials.client_secret.is_none() && spec.oidc.is_some() {
                    self.load_credentials(&session, &mut credentials)
                        .await
                        .map(|()| credentials.target_secret())
                } else {
                    Ok(credentials.target_secret())
                }
            };
            let pop = match spec.pop_u.is_empty() {
                true => Ok(None),
                false => self.pop_key(&session).await.map(Some),
            };
            let tokens = match (secret, pop) {
                (Ok(secret), Ok(pop)) => {
                    let pop = pop.map(|key| key.req_cnf().to_string());
                    self.prompted_tokens(spec, secret, pop, prompt).await
                }
                (Err(error), _) | (_, Err(error)) => Err(error),
            };
            match tokens {
                Ok(tokens) => {
                    let mut credentials = session.credentials.lock().await;
                    let accepted = self
                        .accept_tokens(&session, &mut credentials, tokens, Persist::Required)
                        .await;
                    drop(credentials);
                    match accepted {
                        Ok(access) => self
                            .save_supplied(&session, supplied, remember_password)
                            .await
                            .map(|()| access),
                        Err(error) => Err(error),
                    }
                }
                Err(error) => Err(error),
            }
        } else {
            self.login_without_prompt(&session, supplied, remember_password)
                .await
        };
        let access = match accepted {
            Ok(access) => access,
            Err(error) => {
                // A session this login created must not linger without tokens.
                if created {
                    self.forget_if_empty(&session);
                }
                return Err(error);
            }
        };
        session.signed_in(self.clock.now());
        self.save_index().await;
        self.wake_scheduler();
        let id = session.id.clone();
        self.pending.clear(&id);
        let account = session.account();
        tracing::info!(
            "session {id} signed in as {}",
            account.as_deref().unwrap_or("an unnamed account")
        );
        self.emit(&id, super::EventKind::LoggedIn, None);
        Ok(LoggedIn {
            session_id: id,
            account,
            expires_at: access.expires_at,
        })
    }

    /// The interactive flows: a device code to show, or a URL to open.
    async fn prompted_tokens(
        &self,
        spec: &SessionSpec,
        client_secret: Option<crate::identity::TargetSecret>,
        pop: Option<String>,
        prompt: &(dyn Fn(LoginPrompt) + Send + Sync),
    ) -> Result<crate::identity::token::TokenSet, BrokerError> {
        let mut target = spec.target();
        target.client_secret = client_secret;
        target.pop = pop;
        let timeout = self.settings.get().login.timeout;
        let hint = (!spec.login_hint.is_empty()).then_some(spec.login_hint.as_str());
        let tokens = if spec.login_mode == LoginMode::Interactive {
            let user = UserLogin {
                login_hint: hint,
                redirect_url: (!spec.redirect_url.is_empty()).then_some(spec.redirect_url.as_str()),
            };
            self.identity
                .interactive_login(&target, &user, prompt, timeout)
                .await
        } else {
            self.identity
                .device_code_login(&target, prompt, timeout)
                .await
        };
        let tokens = tokens.map_err(BrokerError::from_login)?;
        if let Some(expected) = hint {
            check_account(expected, tokens.account.as_deref())?;
        }
        Ok(tokens)
    }
}

/// A session named by its account (`--login-hint`) keeps only that account's tokens: a user
/// who picks another account in the browser, or approves a device code signed in as someone
/// else, must not have that account's tokens served to the kube contexts of the first.
fn check_account(expected: &str, signed_in: Option<&str>) -> Result<(), BrokerError> {
    match signed_in {
        Some(account) if account.eq_ignore_ascii_case(expected) => Ok(()),
        other => Err(BrokerError::LoginFailed {
            idp_codes: Vec::new(),
            message: format!(
                "signed in as {}, but this session is for {expected} (--login-hint); sign in \
                 again as {expected}",
                other.map_or_else(
                    || "an unnamed account".into(),
                    |a| printable(a).into_owned()
                )
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hinted_session_takes_only_its_account() {
        assert!(check_account("alice@contoso.example", Some("Alice@Contoso.Example")).is_ok());
        let err = check_account("alice@contoso.example", Some("bob@contoso.example"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("signed in as bob@contoso.example"), "{err}");
        assert!(check_account("alice@contoso.example", None).is_err());
    }
}
