//! A stand-in for the desktop's notification service (`org.freedesktop.Notifications`, what
//! GNOME Shell, KDE, dunst and mako serve) on a test's private session bus: it answers as they
//! do and keeps every notification it was sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One notification as the service received it.
#[derive(Clone, Debug)]
pub struct Notification {
    pub app_name: String,
    pub summary: String,
    pub body: String,
}

/// Serves on the bus at `address` until dropped.
pub struct NotificationService {
    _connection: zbus::blocking::Connection,
    received: Arc<Mutex<Vec<Notification>>>,
}

struct Recorder {
    received: Arc<Mutex<Vec<Notification>>>,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Recorder {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: String,
        _replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        _actions: Vec<String>,
        _hints: HashMap<String, zbus::zvariant::OwnedValue>,
        _expire_timeout: i32,
    ) -> u32 {
        let mut received = self.received.lock().unwrap_or_else(|p| p.into_inner());
        received.push(Notification {
            app_name,
            summary,
            body,
        });
        received.len() as u32
    }

    fn get_capabilities(&self) -> Vec<String> {
        vec!["body".into()]
    }

    fn get_server_information(&self) -> (String, String, String, String) {
        (
            "tb-test".into(),
            "token-broker tests".into(),
            "1".into(),
            "1.2".into(),
        )
    }
}

impl NotificationService {
    pub fn start(address: &str) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let connection = zbus::blocking::connection::Builder::address(address)
            .and_then(|b| b.name("org.freedesktop.Notifications"))
            .and_then(|b| {
                b.serve_at(
                    "/org/freedesktop/Notifications",
                    Recorder {
                        received: received.clone(),
                    },
                )
            })
            .and_then(|b| b.build())
            .expect("the stand-in notification service is on the bus");
        NotificationService {
            _connection: connection,
            received,
        }
    }

    /// The notifications received so far.
    pub fn received(&self) -> Vec<Notification> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
