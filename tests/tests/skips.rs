//! The README's test command says which tests skipped their checks and why: the SKIPPED line
//! reaches the terminal even though cargo test captures what passing tests print.

use broker_tests::harness::{on_path, require};

/// Not run on its own: the test below runs it, in a child with system tests not required.
#[test]
#[ignore = "run by the_skip_line_shows_without_nocapture"]
fn needs_a_piece_that_is_not_there() {
    if !require(
        "the tool token-broker-nonexistent-tool",
        on_path("token-broker-nonexistent-tool"),
    ) {
        return;
    }
    panic!("the tool cannot be there");
}

#[test]
fn the_skip_line_shows_without_nocapture() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "needs_a_piece_that_is_not_there"])
        .env_remove("TOKEN_BROKER_REQUIRE_SYSTEM_TESTS")
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{all}");
    assert!(
        all.contains(
            "SKIPPED: needs_a_piece_that_is_not_there: the tool token-broker-nonexistent-tool \
             is not available"
        ),
        "{all}"
    );
}
