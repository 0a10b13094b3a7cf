# Homebrew formula template for token-broker. For a release, fill in the tag's version and the
# tarball's sha256 (`shasum -a 256`), then put this file in a tap (e.g. token-broker/homebrew-tap).
class TokenBroker < Formula
  desc "Entra ID tokens for kubectl, kept fresh by a per-user daemon"
  homepage "https://github.com/token-broker/token-broker"
  url "https://github.com/token-broker/token-broker/archive/refs/tags/v@VERSION@.tar.gz"
  sha256 "@SHA256@"
  license "MIT"
  head "https://github.com/token-broker/token-broker.git", branch: "main"

  depends_on "rust" => :build

  def install
    # No protoc, OpenSSL or other system library is needed to build.
    system "cargo", "install", *std_cargo_args(path: "daemon")
    system "cargo", "install", *std_cargo_args(path: "shim")
    generate_completions_from_executable(bin/"brokerctl", "completions")
    system bin/"brokerctl", "man", "--out-dir", man1
  end

  # `brew services start token-broker` runs brokerd at login, as `brokerctl service install`
  # would; use one or the other.
  # launchd opens the log but does not make its directory: var/log exists in every prefix.
  # brokerd finds its socket without TMPDIR, which launchd may not set.
  service do
    run [opt_bin/"brokerd"]
    keep_alive successful_exit: false
    log_path var/"log/token-broker.log"
    error_log_path var/"log/token-broker.log"
  end

  test do
    assert_match version.to_s, shell_output("#{bin}/brokerctl --version")
    assert_match "get-token", shell_output("#{bin}/broker-shim --help")
    # Start on demand is what a fresh install relies on; here it only has to parse its flags.
    assert_match "--on-demand", shell_output("#{bin}/brokerd --help")
  end
end
