//! What the Secret Service (the freedesktop.org keyring API on D-Bus) says of itself: is there
//! a session bus, a provider on it, a default collection, and is that collection unlocked and
//! kept on disk? These are the ways keyrings fail in practice: no provider on a server, no
//! default collection on WSL, a locked login keyring, a session-only collection that is gone
//! after a reboot.

use super::Check;

/// Blocks (D-Bus calls): run it on a blocking thread. `None` where there is no Secret Service
/// to ask (macOS: the Keychain is checked by the round trip alone).
#[cfg(not(all(
    unix,
    not(any(target_os = "macos", target_os = "ios", target_os = "android"))
)))]
pub fn diagnose() -> Option<Check> {
    None
}

#[cfg(all(
    unix,
    not(any(target_os = "macos", target_os = "ios", target_os = "android"))
))]
pub fn diagnose() -> Option<Check> {
    use secret_service::blocking::SecretService;
    use secret_service::{EncryptionType, Error};
    const ID: &str = "keyring";

    let bus = match zbus::blocking::Connection::session() {
        Ok(bus) => bus,
        Err(e) => {
            let address = std::env::var("DBUS_SESSION_BUS_ADDRESS")
                .map(|a| format!("DBUS_SESSION_BUS_ADDRESS is {a}"))
                .unwrap_or_else(|_| "DBUS_SESSION_BUS_ADDRESS is not set".into());
            return Some(Check::fail(
                ID,
                format!("no D-Bus session bus, so no Secret Service ({address}): {e}"),
                "run brokerd inside your login session (as a systemd user service it gets the \
                 session bus), or on a headless machine under `dbus-run-session`",
            ));
        }
    };
    // Plain: nothing secret crosses the bus in this check.
    let service = match SecretService::connect_with_existing(EncryptionType::Plain, bus) {
        Ok(service) => service,
        Err(e) => {
            return Some(Check::fail(
                ID,
                format!("no Secret Service provider on the D-Bus session bus ({e})"),
                "install and start one: gnome-keyring (`gnome-keyring-daemon --start \
                 --components=secrets`), KeePassXC with Secret Service integration, or KWallet",
            ));
        }
    };
    let collection = match service.get_default_collection() {
        Ok(collection) => collection,
        Err(Error::NoResult) => {
            return Some(Check::fail(
                ID,
                "the Secret Service has no default collection (as on WSL), so there is nowhere \
                 to keep refresh tokens",
                "create a default keyring: in Seahorse (Passwords and Keys) add a keyring and \
                 choose \"Set as default\", or start gnome-keyring with `--unlock` (it reads \
                 the new keyring's password from stdin)",
            ));
        }
        Err(e) => {
            return Some(Check::fail(
                ID,
                format!("the Secret Service did not name its default collection: {e}"),
                "restart the keyring provider (gnome-keyring, KeePassXC, KWallet)",
            ));
        }
    };
    let label = collection
        .get_label()
        .ok()
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| collection.collection_path.to_string());
    match collection.is_locked() {
        Ok(false) => {}
        Ok(true) => {
            return Some(Check::fail(
                ID,
                format!(
                    "the Secret Service's default collection ({label:?}) is locked: brokerd \
                     cannot read or keep refresh tokens until it is unlocked"
                ),
                "unlock it: log in to the desktop session, or unlock it in Seahorse \
                 (Passwords and Keys); on a headless machine start gnome-keyring with \
                 `--unlock`, reading its password from stdin",
            ));
        }
        Err(e) => {
            return Some(Check::fail(
                ID,
                format!("cannot tell whether the default collection ({label:?}) is locked: {e}"),
                "restart the keyring provider (gnome-keyring, KeePassXC, KWallet)",
            ));
        }
    }
    // The `session` collection lives in the provider's memory only.
    if collection.collection_path.as_str().ends_with("/session") {
        return Some(Check::warn(
            ID,
            format!(
                "the Secret Service's default collection ({label:?}) is the session collection, \
                 kept in memory only: refresh tokens will not survive a reboot"
            ),
            "make a keyring on disk the default: in Seahorse (Passwords and Keys) right-click \
             the Login keyring and choose \"Set as default\"",
        ));
    }
    Some(Check::pass(
        ID,
        format!("Secret Service: the default collection ({label:?}) is unlocked and kept on disk"),
    ))
}
