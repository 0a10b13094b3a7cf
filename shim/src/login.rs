//! Signing in from inside kubectl, when brokerd says a login is needed and kubectl says the
//! user is at a terminal. Everything goes to stderr: stdout belongs to the ExecCredential.

use std::process::Stdio;

use broker_proto::v1::{
    Credentials, LoginEvent, LoginRequest, SessionSpec, broker_client::BrokerClient,
    login_event::Event,
};
use tonic::transport::Channel;

pub async fn run(
    client: &mut BrokerClient<Channel>,
    spec: &SessionSpec,
    credentials: &Credentials,
) -> Result<(), String> {
    let mut stream = client
        .login(LoginRequest {
            spec: Some(spec.clone()),
            credentials: Some(credentials.clone()),
            remember_password: false,
        })
        .await
        .map_err(|s| broker_proto::error_message(&s))?
        .into_inner();
    loop {
        match stream
            .message()
            .await
            .map_err(|s| broker_proto::error_message(&s))?
        {
            Some(LoginEvent {
                event: Some(Event::DeviceCode(code)),
            }) => {
                eprintln!("{}", code.message);
                eprintln!("\n    code: {}\n", code.user_code);
            }
            Some(LoginEvent {
                event: Some(Event::OpenUrl(open)),
            }) => {
                eprintln!(
                    "Sign in with your browser. If it does not open, visit:\n\n    {}\n",
                    open.url
                );
                open_browser(&open.url);
            }
            Some(LoginEvent {
                event: Some(Event::LoggedIn(done)),
            }) => {
                if !done.account.is_empty() {
                    eprintln!("Signed in as {}.", done.account);
                }
                return Ok(());
            }
            Some(LoginEvent {
                event: Some(Event::Failed(failure)),
            }) => return Err(failure.message),
            Some(LoginEvent { event: None }) => {}
            None => return Err("brokerd ended the login without a result".into()),
        }
    }
}

/// Best effort: the URL is on stderr anyway. `$BROWSER` first, then the desktop's opener.
fn open_browser(url: &str) {
    let opener = std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| {
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
