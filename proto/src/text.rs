//! Text from outside (an identity provider's messages, a process's executable path) made safe
//! to print: a terminal obeys escape sequences, and a log line ends at a newline.

use std::borrow::Cow;

/// Characters that move the cursor, ring, change the title or colours, or reorder what a
/// terminal shows: the C0 and C1 controls and DEL, and the Unicode bidirectional formatting
/// characters (which can make text read differently from what it is).
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every unsafe character removed, and line breaks and tabs turned into spaces:
/// one line of plain text, for printing what an identity provider said.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\n' | '\r' | '\t') {
            if !out.ends_with(' ') {
                out.push(' ');
            }
        } else if !is_unsafe_char(c) {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `text` with every unsafe character and backslash written as an escape (`\n`, `\x1b`,
/// `\u{202e}`, `\\`), so that a log line shows what was there and stays one line.
pub fn escaped(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c == '\\' || is_unsafe_char(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x100 && is_unsafe_char(c) => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if is_unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Whether a client may hand `url` to a browser: `https://`, or `http://` to a loopback
/// address (where brokerd's own redirect listener and a local mock live). Anything else (a
/// `file:` or `javascript:` URL, an option-looking argument, a URL with spaces or controls)
/// is shown, never opened.
pub fn is_openable_url(url: &str) -> bool {
    if url.chars().any(|c| c.is_whitespace() || is_unsafe_char(c)) {
        return false;
    }
    let lower = url.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("https://") {
        return !rest.is_empty() && !rest.starts_with('/');
    }
    let Some(rest) = lower.strip_prefix("http://") else {
        return false;
    };
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..host_end];
    if authority.contains('@') {
        return false;
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((host, port)) if port.is_empty() || port.starts_with(':') => host,
            _ => return false,
        }
    } else {
        authority.split(':').next().unwrap_or("")
    };
    host == "localhost" || host == "::1" || is_loopback_v4(host)
}

fn is_loopback_v4(host: &str) -> bool {
    host.parse::<std::net::Ipv4Addr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_strips_escapes_and_keeps_one_line() {
        assert_eq!(printable("plain text"), "plain text");
        assert_eq!(
            printable("To sign in\u{1b}]0;pwned\u{7}, visit\r\nhttps://x \u{1b}[2J"),
            "To sign in]0;pwned, visit https://x [2J"
        );
        assert_eq!(printable("abc\u{202e}fed"), "abcfed");
        assert_eq!(printable("a\u{9b}31mb"), "a31mb");
    }

    #[test]
    fn escaped_shows_what_was_there_on_one_line() {
        assert_eq!(escaped("/usr/bin/kubectl"), "/usr/bin/kubectl");
        assert_eq!(
            escaped("/tmp/x\naudit: token served session=forged\u{1b}[2K\\"),
            "/tmp/x\\naudit: token served session=forged\\x1b[2K\\\\"
        );
        assert_eq!(escaped("a\u{202e}b"), "a\\u{202e}b");
        assert_eq!(escaped("/home/josé/bin"), "/home/josé/bin");
    }

    #[test]
    fn only_https_and_loopback_http_urls_are_opened() {
        for good in [
            "https://login.microsoftonline.com/x/oauth2/v2.0/authorize?a=b",
            "http://127.0.0.1:8400/devicelogin",
            "http://localhost:1234/",
            "http://[::1]:5000/cb?code=1",
            "HTTPS://example.com",
        ] {
            assert!(is_openable_url(good), "{good}");
        }
        for bad in [
            "file:///etc/passwd",
            "javascript:alert(1)",
            "http://example.com/",
            "http://127.0.0.1.evil.example/",
            "http://localhost@evil.example/",
            "-a /Applications/Calculator.app",
            "https://x\u{1b}]0;t",
            "https:///path",
            "https://a b",
            "",
        ] {
            assert!(!is_openable_url(bad), "{bad}");
        }
    }
}
