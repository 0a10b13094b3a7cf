//! Signing in from inside kubectl, when brokerd says a login is needed and kubectl says the
//! user is at a terminal. Everything goes to stderr: stdout belongs to the ExecCredential.
//! What the identity provider wrote (the instructions, the code) is printed without its
//! control characters, and only an `https://` (or loopback `http://`) URL is ever opened.

use std::process::Stdio;

use broker_proto::kubelogin::Browser;
use broker_proto::text::{is_openable_url, printable};
use broker_proto::v1::{GetTokenRequest, LoginEvent, LoginRequest, login_event::Event};

use broker_shim::grpc::{self, Channel};

/// Why a login did not happen.
pub enum LoginError {
    /// brokerd does not sign in on this socket (the forwarding socket: sign-ins happen where
    /// brokerd runs).
    NotHere,
    Failed(String),
}

/// Runs the login brokerd asks for, for the session `request` names, until it ends.
pub fn run(
    channel: &mut Channel,
    request: &GetTokenRequest,
    browser: &Browser,
) -> Result<(), LoginError> {
    let login = LoginRequest {
        spec: request.spec.clone(),
        credentials: request.credentials.clone(),
        remember_password: false,
        allow_forwarding: false,
    };
    let failed = |e: grpc::CallError| match e {
        grpc::CallError::Failed(failure)
            if failure.reason() == broker_proto::v1::ErrorReason::PermissionDenied =>
        {
            LoginError::NotHere
        }
        e => LoginError::Failed(e.to_message()),
    };
    let mut call = channel
        .start::<_, LoginEvent>(grpc::LOGIN, &login)
        .map_err(failed)?;
    loop {
        match call.next_message().map_err(failed)? {
            Some(LoginEvent {
                event: Some(Event::DeviceCode(code)),
            }) => {
                eprintln!("{}", printable(&code.message));
                eprintln!("\n    code: {}\n", printable(&code.user_code));
            }
            Some(LoginEvent {
                event: Some(Event::OpenUrl(open)),
            }) => {
                if is_openable_url(&open.url) {
                    if *browser == Browser::Skip {
                        eprintln!("Sign in with your browser at:\n\n    {}\n", open.url);
                    } else {
                        eprintln!(
                            "Sign in with your browser. If it does not open, visit:\n\n    {}\n",
                            open.url
                        );
                        open_browser(&open.url, browser);
                    }
                } else {
                    eprintln!(
                        "brokerd asked to open a URL that is not https:// (not opened):\n\n    \
                         {}\n",
                        printable(&open.url)
                    );
                }
            }
            Some(LoginEvent {
                event: Some(Event::LoggedIn(done)),
            }) => {
                if !done.account.is_empty() {
                    eprintln!("Signed in as {}.", printable(&done.account));
                }
                // Reads the end of the call, so that the connection is ready for the next.
                while call.next_message().map_err(failed)?.is_some() {}
                return Ok(());
            }
            Some(LoginEvent {
                event: Some(Event::Failed(failure)),
            }) => return Err(LoginError::Failed(printable(&failure.message).into_owned())),
            Some(LoginEvent { event: None }) => {}
            None => {
                return Err(LoginError::Failed(
                    "brokerd ended the login without a result".into(),
                ));
            }
        }
    }
}

/// Best effort: the URL is on stderr anyway. The kubeconfig's `--browser-command`, else
/// `$BROWSER`, else the desktop's opener.
fn open_browser(url: &str, browser: &Browser) {
    let chosen = match browser {
        Browser::Command(command) => Some(command.clone()),
        _ => std::env::var("BROWSER").ok(),
    };
    let opener = chosen.filter(|b| !b.is_empty()).unwrap_or_else(|| {
        if cfg!(target_os = "macos") {
            "open"
        } else {
            "xdg-open"
        }
        .to_string()
    });
    let _ = std::process::Command::new(opener)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}
