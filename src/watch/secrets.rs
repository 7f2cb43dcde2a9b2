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
/// and the values of its query's credentials (`?user=admin&pwd=…`, as
/// many IP cameras take them: see [`SECRET_KEYS`]), replaced by `***`, for
/// logs, events and errors.
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
    query_secrets_hidden(&shown)
}

/// Query keys whose values are credentials (compared without case).
pub const SECRET_KEYS: [&str; 17] = [
    "password",
    "passwd",
    "pwd",
    "pass",
    "pw",
    "passphrase",
    "secret",
    "token",
    "access_token",
    "auth",
    "authorization",
    "key",
    "apikey",
    "api_key",
    "sig",
    "signature",
    "credentials",
];

/// `url` with the value of each query key of [`SECRET_KEYS`] made `***`.
fn query_secrets_hidden(url: &str) -> String {
    let Some(q) = url.find('?') else {
        return url.to_string();
    };
    let end = url[q..].find('#').map_or(url.len(), |h| q + h);
    let pairs: Vec<String> = url[q + 1..end]
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, v))
                if !v.is_empty() && SECRET_KEYS.iter().any(|s| k.eq_ignore_ascii_case(s)) =>
            {
                format!("{k}=***")
            }
            _ => pair.to_string(),
        })
        .collect();
    format!("{}?{}{}", &url[..q], pairs.join("&"), &url[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_a_query_are_hidden() {
        assert_eq!(
            redacted("http://10.0.0.9/videostream.cgi?user=admin&pwd=s3cret&res=1"),
            "http://10.0.0.9/videostream.cgi?user=admin&pwd=***&res=1"
        );
        assert_eq!(
            redacted("rtsp://u:pw@cam/live?channel=1&PASSWORD=x#frag"),
            "rtsp://u:***@cam/live?channel=1&PASSWORD=***#frag"
        );
        assert_eq!(
            redacted("ffmpeg:https://h/s.m3u8?token=abc"),
            "ffmpeg:https://h/s.m3u8?token=***"
        );
        // Nothing secret: as it was.
        for s in [
            "http://h/x?size=2&key=",
            "http://h/x?keyframe=1",
            "dir:/a?b",
            "http://h/x",
        ] {
            assert_eq!(redacted(s), s);
        }
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
