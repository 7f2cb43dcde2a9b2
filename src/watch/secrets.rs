//! Passwords: kept in files (`mqtt_password_file`, `source_password_file`),
//! put into a source's URL, and hidden wherever a URL is shown.

use crate::watch::SettingError;
/// `%XX` escapes decoded (a URL's user and password); `None` when an
/// escape is malformed or the result is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Whether others than the owner and group may read `path`.
pub fn world_readable(path: &std::path::Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

/// The password in the first line of `path` (settings key `key`, for the
/// error): a password kept out of the config and clip-edge's command line
/// (a program source still gets it in its URL, on its own command line). An
/// empty first line is an error; a file every user may read, a warning.
pub fn read_password_file(key: &str, path: &std::path::Path) -> Result<String, SettingError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("{key} {}: {e}", path.display()))?;
    if world_readable(path) {
        log::warn!(
            "{key} {}: every user of this machine can read it (chmod 600; for the packaged service, group clip-edge and chmod 640)",
            path.display()
        );
    }
    let first = text.lines().next().unwrap_or("");
    if first.is_empty() {
        return Err(format!(
            "{key} {}: its first line is empty (the password goes there)",
            path.display()
        )
        .into());
    }
    Ok(first.to_string())
}

/// `spec` (a URL, or `ffmpeg:` of one) with `password` for the user it
/// names (`scheme://USER@HOST/...`), percent-encoded into it.
pub fn with_url_password(spec: &str, password: &str) -> Result<String, SettingError> {
    let shown = redacted(spec);
    let Some(s) = spec.find("://") else {
        return Err(format!("source_password_file: the source {shown:?} is not a URL").into());
    };
    let rest = &spec[s + 3..];
    let cut = rest.find(['?', '#', '/']).unwrap_or(rest.len());
    let Some(at) = rest[..cut].rfind('@') else {
        return Err(format!(
            "source_password_file: the source {shown:?} names no user (scheme://USER@HOST/...)"
        )
        .into());
    };
    if rest[..at].contains(':') {
        return Err(
            format!("source_password_file: the source {shown:?} has a password already").into(),
        );
    }
    let mut encoded = String::new();
    for b in password.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(format!(
        "{}{}:{encoded}{}",
        &spec[..s + 3],
        &rest[..at],
        &rest[at..]
    ))
}

/// `spec` with the password of any `scheme://user:password@host` in it,
/// and the values of the credentials in its query or path (`?user=admin&pwd=…`,
/// as many IP cameras take them: see [`secret_values_hidden`]), replaced by
/// `***`, for logs, events and errors.
pub fn redacted(spec: &str) -> String {
    let Some(s) = spec.find("://") else {
        return spec.to_string();
    };
    let rest = &spec[s + 3..];
    // The last `@` before a query: a password may hold an unencoded `/`.
    let cut = rest.find(['?', '#']).unwrap_or(rest.len());
    let shown = match rest[..cut].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &spec[..s + 3], &rest[at..])
        }
        None => spec.to_string(),
    };
    secret_values_hidden(&shown)
}

/// Whether `key` (of a `key=value` pair) names a credential: it holds
/// `pass`, `pwd`, `psw`, `secret`, `token`, `cred`, `auth`, `session` or
/// `signature`, ends in `key` or `sig`, or is `pw` (compared without case).
/// Hiding a harmless value now and then (`author=`) costs nothing.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    const HOLDS: [&str; 9] = [
        "pass",
        "pwd",
        "psw",
        "secret",
        "token",
        "cred",
        "auth",
        "session",
        "signature",
    ];
    HOLDS.iter().any(|h| k.contains(h)) || k.ends_with("key") || k.ends_with("sig") || k == "pw"
}

/// `text` with the value of every `key=value` pair whose key
/// [`is_secret_key`] made `***`: in a URL's query (`?user=admin&pwd=…`),
/// in its path (`/user=admin&password=…&channel=1`, as some recorders take
/// them) or anywhere in a line (a program's message quoting a URL). A pair
/// starts the text or follows one of `/?&;#`, a space or a quote; its value
/// ends at one of `&;#/?`, a space or a quote.
pub fn secret_values_hidden(text: &str) -> String {
    const BEFORE: &[u8] = b"/?&;# \t'\"";
    const AFTER: &[u8] = b"&;#/? \t'\"";
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut last = 0;
    while i < b.len() {
        let starts = i == 0 || BEFORE.contains(&b[i - 1]);
        if !starts {
            i += 1;
            continue;
        }
        let mut k = i;
        while k < b.len() && (b[k].is_ascii_alphanumeric() || b"_-.".contains(&b[k])) {
            k += 1;
        }
        if k == i || k >= b.len() || b[k] != b'=' || !is_secret_key(&text[i..k]) {
            i = k.max(i + 1);
            continue;
        }
        let mut v = k + 1;
        while v < b.len() && !AFTER.contains(&b[v]) {
            v += 1;
        }
        if v > k + 1 {
            out.push_str(&text[last..=k]);
            out.push_str("***");
            last = v;
        }
        i = v.max(k + 1);
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_a_query_or_path_are_hidden() {
        for (spec, shown) in [
            (
                "http://10.0.0.9/videostream.cgi?user=admin&pwd=s3cret&res=1",
                "http://10.0.0.9/videostream.cgi?user=admin&pwd=***&res=1",
            ),
            (
                "rtsp://u:pw@cam/live?channel=1&PASSWORD=x#frag",
                "rtsp://u:***@cam/live?channel=1&PASSWORD=***#frag",
            ),
            (
                "ffmpeg:https://h/s.m3u8?token=abc",
                "ffmpeg:https://h/s.m3u8?token=***",
            ),
            (
                "rtsp://10.0.0.5:554/user=admin&password=s3cretD&channel=1&stream=0.sdp?",
                "rtsp://10.0.0.5:554/user=admin&password=***&channel=1&stream=0.sdp?",
            ),
            (
                "https://b.s3/x.jpg?X-Amz-Credential=AK/2026&X-Amz-Signature=ff&size=2",
                "https://b.s3/x.jpg?X-Amz-Credential=***/2026&X-Amz-Signature=***&size=2",
            ),
            (
                "http://h/s?api-key=a;psw=b;auth_token=c;session=d;loginpass=e",
                "http://h/s?api-key=***;psw=***;auth_token=***;session=***;loginpass=***",
            ),
        ] {
            assert_eq!(redacted(spec), shown);
        }
        // Nothing secret: as it was.
        for s in [
            "http://h/x?size=2&key=",
            "http://h/x?keyframe=1",
            "dir:/a?b",
            "http://h/x",
        ] {
            assert_eq!(redacted(s), s);
        }
        // A program's line quoting another URL than the one it was given.
        assert_eq!(
            secret_values_hidden("Error loading 'http://h/seg0.ts?token=s3cretZ' (5 tries)"),
            "Error loading 'http://h/seg0.ts?token=***' (5 tries)"
        );
    }

    #[test]
    fn a_password_file_fills_in_the_sources_url() {
        assert_eq!(
            with_url_password("http://cam@10.0.0.9/stream", "p@ss w/1").unwrap(),
            "http://cam:p%40ss%20w%2F1@10.0.0.9/stream"
        );
        assert_eq!(
            with_url_password("ffmpeg:rtsp://cam@h:554/s?x=a@b", "pw").unwrap(),
            "ffmpeg:rtsp://cam:pw@h:554/s?x=a@b"
        );
        for (spec, needle) in [
            ("http://h/x", "names no user"),
            ("http://u:old@h/x", "has a password already"),
            ("dir:/x", "not a URL"),
        ] {
            let e = with_url_password(spec, "pw").unwrap_err().0;
            assert!(e.contains(needle) && !e.contains("old"), "{e}");
        }
    }

    #[test]
    fn passwords_in_urls_are_hidden() {
        for (spec, want) in [
            (
                "rtsp://admin:hunter2@10.0.0.9:554/live",
                "rtsp://admin:***@10.0.0.9:554/live",
            ),
            (
                "ffmpeg:http://u:p@cam/x.mjpg?a=b@c",
                "ffmpeg:http://u:***@cam/x.mjpg?a=b@c",
            ),
            ("rtsp://10.0.0.9/live", "rtsp://10.0.0.9/live"),
            ("dir:/srv/a@b", "dir:/srv/a@b"),
            ("rtsp://user@host/", "rtsp://user:***@host/"),
            ("rtsp://u:pa/ss@h/x", "rtsp://u:***@h/x"),
        ] {
            assert_eq!(redacted(spec), want);
        }
    }
}
