//! Proof-of-possession sessions (Azure Arc, kubelogin's `--pop-enabled`): the session's key,
//! loaded from the secret store or made once and kept there, and the signed wrapper every
//! served token gets for the cluster that asked (`identity::pop` has the wire shapes).

use std::sync::Arc;
use std::time::Duration;

use super::error::BrokerError;
use super::persist::SecretKind;
use super::session::Session;
use super::{Broker, Grant};
use crate::identity::pop::PopKey;
use crate::spec::SessionSpec;

/// How long a PoP token is told to be good for: its timestamp is checked by the cluster, so
/// kubectl comes back for a fresh one well before a guard's window closes.
const POP_TOKEN_LIFETIME: Duration = Duration::from_secs(5 * 60);

impl Broker {
    /// The session's PoP key: in memory, else from the secret store, else made now and kept.
    pub(super) async fn pop_key(&self, session: &Session) -> Result<Arc<PopKey>, BrokerError> {
        if let Some(key) = session.pop_key.get() {
            return Ok(key.clone());
        }
        let stored_key = SecretKind::PopKey.key(&session.id);
        let key = match self.load_secret(stored_key.clone()).await? {
            Some(stored) => PopKey::from_stored(&stored).map_err(identity)?,
            None => {
                let (key, stored) = tokio::task::spawn_blocking(PopKey::generate)
                    .await
                    .map_err(|e| BrokerError::Internal(format!("making a PoP key: {e}")))?
                    .map_err(identity)?;
                let label = format!(
                    "token-broker proof-of-possession key: {}",
                    session.spec.describe()
                );
                self.save_secret(stored_key, label, stored).await?;
                tracing::info!("session {}: made its proof-of-possession key", session.id);
                key
            }
        };
        // Two callers may race here: the first key set wins, and both were the stored one.
        Ok(session.pop_key.get_or_init(|| Arc::new(key)).clone())
    }

    /// For a PoP request (`spec` carries the cluster's `u`), the grant's access token wrapped
    /// and signed for that cluster; otherwise the grant as it is.
    pub(super) fn as_requested(
        &self,
        spec: &SessionSpec,
        grant: Grant,
    ) -> Result<Grant, BrokerError> {
        if spec.pop_u.is_empty() {
            return Ok(grant);
        }
        let key = self
            .session(&grant.session_id)
            .and_then(|session| session.pop_key.get().cloned())
            .ok_or_else(|| {
                BrokerError::Internal("the session's proof-of-possession key is not loaded".into())
            })?;
        let now = self.clock.now();
        let signed = key
            .sign(grant.token.expose(), &spec.pop_u, now)
            .map_err(identity)?;
        let until = (now + POP_TOKEN_LIFETIME).min(grant.token.expires_at);
        Ok(Grant {
            session_id: grant.session_id,
            token: crate::identity::token::AccessToken::new(signed.into(), until),
            expires_at: grant.expires_at.min(until),
        })
    }
}

fn identity(source: crate::identity::IdentityError) -> BrokerError {
    BrokerError::Identity { source }
}
