//! The broker's address: `mqtt[s]://[USER[:PASSWORD]@]HOST[:PORT][/PREFIX]`,
//! and a password kept in a file.

use crate::watch::secrets::percent_decode;
use crate::watch::SettingError;

/// `mqtt[s]://[USER[:PASSWORD]@]HOST[:PORT][/PREFIX]` (user and password
/// percent-encoded, as in any URL; the password may come from a file
/// instead: [`MqttUrl::with_password_file`]). `mqtts://` is TLS, port
/// 8883 unless named.
#[derive(Clone, PartialEq, Eq)]
pub struct MqttUrl {
    pub host: String,
    pub port: u16,
    pub prefix: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `mqtts://`: TLS to the broker.
    pub tls: bool,
    /// The URL named its prefix (else [`MqttUrl::for_node`] gives each
    /// node one of its own).
    named_prefix: bool,
}

/// The prefix of a URL that names none, before the node's level.
pub const DEFAULT_PREFIX: &str = "clip-edge";

/// Never shows the password.
impl std::fmt::Debug for MqttUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("prefix", &self.prefix)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .finish()
    }
}

impl MqttUrl {
    /// `HOST:PORT` as messages show it (`[…]` around an IPv6 address).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL for the device `node`: a URL that names no prefix gets
    /// `clip-edge/<node>` (the node as a topic level), so that boards
    /// sharing a broker never share a status or a state topic.
    pub fn for_node(mut self, node: &str) -> Self {
        if !self.named_prefix {
            self.prefix = format!("{DEFAULT_PREFIX}/{}", super::slug(node));
        }
        self
    }

    /// The password read from `path` (its first line), for the user the URL
    /// names: a password kept out of the config and the command line.
    pub fn with_password_file(mut self, path: &std::path::Path) -> Result<Self, SettingError> {
        if self.username.is_none() {
            return Err(format!(
                "mqtt_password_file {}: the --mqtt URL names no user (mqtt://USER@HOST/...)",
                path.display()
            )
            .into());
        }
        let first = crate::watch::secrets::read_password_file("mqtt_password_file", path)?;
        self.password = Some(first);
        Ok(self)
    }
}

impl std::str::FromStr for MqttUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let shown = crate::watch::secrets::redacted(s);
        let bad = |why: &str| {
            format!(
                "--mqtt {shown:?}: {why} (expected mqtt[s]://[USER[:PASSWORD]@]HOST[:PORT][/PREFIX])"
            )
        };
        let (tls, rest) = match (s.strip_prefix("mqtt://"), s.strip_prefix("mqtts://")) {
            (Some(r), _) => (false, r),
            (_, Some(r)) => (true, r),
            _ => return Err(bad("not an mqtt:// or mqtts:// URL")),
        };
        let (authority, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let named_prefix = !prefix.trim_matches('/').is_empty();
        let prefix = if named_prefix { prefix } else { DEFAULT_PREFIX };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, pass) = match u.split_once(':') {
                    Some((a, b)) => (a, Some(b)),
                    None => (u, None),
                };
                let dec = |v: &str| {
                    percent_decode(v).ok_or_else(|| bad("a bad %-escape in the user or password"))
                };
                if user.is_empty() {
                    return Err(bad("an empty user name"));
                }
                (Some(dec(user)?), pass.map(dec).transpose()?)
            }
        };
        // An IPv6 address is in brackets: `[::1]` or `[::1]:1883`.
        let port_at = match hostport.rfind(']') {
            Some(end) if hostport.starts_with('[') => hostport[end..].find(':').map(|i| end + i),
            _ => hostport.rfind(':'),
        };
        let (host, port) = match port_at {
            Some(i) => (
                &hostport[..i],
                hostport[i + 1..]
                    .parse()
                    .map_err(|_| bad("the port is not a number"))?,
            ),
            None => (hostport, if tls { 8883 } else { 1883 }),
        };
        let prefix = prefix.trim_matches('/');
        // An IPv6 address without its brackets: TLS checks it as an IP
        // address, and a connection resolves it (`[…]` again in messages).
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if prefix.is_empty() || prefix.contains(['+', '#']) {
            return Err(bad("the prefix must be a topic without wildcards"));
        }
        Ok(MqttUrl {
            host: host.into(),
            port,
            prefix: prefix.into(),
            username,
            password,
            tls,
            named_prefix,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::mqtt::slug;
    use crate::watch::secrets::world_readable;

    #[test]
    fn password_files_empty_or_readable_by_all_are_named() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("clip-edge-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("pw");
        let url = || "mqtt://ha@127.0.0.1/x".parse::<MqttUrl>().unwrap();
        std::fs::write(&p, "\nsecond\n").unwrap();
        let e = url().with_password_file(&p).unwrap_err().0;
        assert!(e.contains("first line is empty") && e.contains("pw"), "{e}");
        std::fs::write(&p, "s3cret\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(world_readable(&p));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(!world_readable(&p));
        assert_eq!(
            url().with_password_file(&p).unwrap().password.as_deref(),
            Some("s3cret")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn urls_parse_and_bad_ones_are_named() {
        let u: MqttUrl = "mqtt://127.0.0.1:1884/porch/cam".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.prefix.as_str()),
            ("127.0.0.1", 1884, "porch/cam")
        );
        let u: MqttUrl = "mqtt://broker".parse().unwrap();
        assert_eq!((u.port, u.tls), (1883, false));
        // No prefix: one per node, so that two boards never share a topic.
        assert_eq!(u.clone().for_node("Pi 4").prefix, "clip-edge/pi_4");
        let named: MqttUrl = "mqtt://broker/clip-edge".parse().unwrap();
        assert_eq!(named.for_node("pi").prefix, "clip-edge");
        // IPv6 addresses in brackets, with or without a port.
        let u: MqttUrl = "mqtt://[::1]/x".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 1883));
        assert_eq!(u.authority(), "[::1]:1883");
        let u: MqttUrl = "mqtts://[fe80::2]:8884".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("fe80::2", 8884));
        let u: MqttUrl = "mqtts://broker/ha".parse().unwrap();
        assert_eq!((u.port, u.tls), (8883, true));
        let u: MqttUrl = "mqtts://broker:8884/ha".parse().unwrap();
        assert_eq!((u.port, u.tls), (8884, true));
        for bad in ["http://x", "mqtt://:1/x", "mqtt://h:port/x", "mqtt://h/a/#"] {
            let e = bad.parse::<MqttUrl>().unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        assert_eq!(slug("Red Star!"), "red_star_");
        let u: MqttUrl = "mqtt://homeassistant:p%40ss:w@192.168.1.5/ha"
            .parse()
            .unwrap();
        assert_eq!(
            (
                u.username.as_deref(),
                u.password.as_deref(),
                u.host.as_str(),
                u.port
            ),
            (Some("homeassistant"), Some("p@ss:w"), "192.168.1.5", 1883)
        );
        assert!(!format!("{u:?}").contains("p@ss"), "{u:?}");
        let u: MqttUrl = "mqtt://cam@broker:1884/x".parse().unwrap();
        assert_eq!((u.username.as_deref(), u.password), (Some("cam"), None));
        for bad in [
            "mqtt://u:hunter2@h:port/x",
            "mqtt://:hunter2@h/x",
            "mqtts://u:hunter2@h:x/x",
        ] {
            let e = bad.parse::<MqttUrl>().unwrap_err();
            assert!(!e.contains("hunter2") && e.contains("***"), "{e}");
        }
        let dir = std::env::temp_dir().join(format!("clip-edge-mqtt-pass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pass"), "s3cret\n").unwrap();
        let u: MqttUrl = "mqtt://cam@broker/x".parse().unwrap();
        let u = u.with_password_file(&dir.join("pass")).unwrap();
        assert_eq!(u.password.as_deref(), Some("s3cret"));
        let anon: MqttUrl = "mqtt://broker/x".parse().unwrap();
        assert!(anon
            .with_password_file(&dir.join("pass"))
            .unwrap_err()
            .0
            .contains("no user"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
