//! Every wait has an end: a socket that accepts and never speaks, a brokerd stuck behind a
//! slow identity provider, a flood of idle connections. kubectl sets no limit on its plugin,
//! so the shim's own bounds are all there is between a user and a hung terminal.

use std::io::Read;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use broker_tests::harness::{
    EXEC_V1, Sandbox, as_strs, credential, device_login, exec_info, failure, fast_mock,
    session_args,
};

#[test]
fn a_socket_that_accepts_and_never_speaks_is_given_up_on_in_seconds() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    broker_tests::harness::binaries(); // built before the clock starts
    // Something of the user's own listens where brokerd would, and says nothing.
    let dir = sandbox.socket.parent().unwrap();
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(dir)
        .unwrap();
    let listener = UnixListener::bind(&sandbox.socket).unwrap();
    let holder = std::thread::spawn(move || {
        let held: Vec<UnixStream> = listener.incoming().take(1).flatten().collect();
        std::thread::sleep(Duration::from_secs(15));
        drop(held);
    });
    let started = Instant::now();
    let said = failure(
        &sandbox.shim(
            &as_strs(&session_args(&mock)),
            Some(&exec_info(EXEC_V1, false)),
        ),
        "the shim against a silent socket",
    );
    assert!(started.elapsed() < Duration::from_secs(12), "{said}");
    assert!(
        said.contains("accepted the connection but did not speak HTTP/2 within 5 s"),
        "{said}"
    );
    assert_eq!(said.trim().lines().count(), 1, "{said}");
    holder.join().unwrap();
}

#[test]
fn the_timeout_flag_bounds_a_call_brokerd_cannot_finish() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let daemon = sandbox.start_daemon(&["--store", "memory", "--test-clock"]);
    device_login(&sandbox, &mock);
    // The token needs a refresh, and the IdP takes half a minute to answer.
    mock.set_delay(Some(Duration::from_secs(30)));
    daemon.advance_clock(3599);
    let mut args = session_args(&mock);
    args.extend(["--timeout".to_string(), "2s".to_string()]);
    let started = Instant::now();
    let said = failure(
        &sandbox.shim(&as_strs(&args), Some(&exec_info(EXEC_V1, false))),
        "the shim with --timeout 2s",
    );
    assert!(started.elapsed() < Duration::from_secs(10), "{said}");
    assert!(
        said.contains("did not finish answering within 2 s"),
        "{said}"
    );
    assert_eq!(said.trim().lines().count(), 1, "{said}");
    mock.set_delay(None);
}

#[test]
fn a_flood_of_idle_connections_neither_hangs_new_clients_nor_stays() {
    let mock = fast_mock();
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start_daemon(&["--store", "memory"]);
    device_login(&sandbox, &mock);
    // More connections than brokerd serves at once, none of which ever says a word.
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    );
    let wanted = 6000usize.min(
        rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .map_or(6000, |n| n.saturating_sub(200) as usize),
    );
    let idle: Vec<UnixStream> = (0..wanted)
        .map_while(|_| UnixStream::connect(&sandbox.socket).ok())
        .collect();
    assert!(idle.len() > 1000, "opened {}", idle.len());
    // A new client is served at once all the same.
    let started = Instant::now();
    credential(&sandbox.shim(
        &as_strs(&session_args(&mock)),
        Some(&exec_info(EXEC_V1, false)),
    ));
    assert!(started.elapsed() < Duration::from_secs(10));
    // And the silent ones are closed: after brokerd's greeting each ends (EOF or reset),
    // none is kept waiting.
    for mut stream in idle {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut sink = Vec::new();
        match stream.read_to_end(&mut sink) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("an idle connection was kept open: {other:?}"),
        }
    }
}
