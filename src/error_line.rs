//! How the binaries say what went wrong: an error and its causes on one
//! line.

/// `e` and its causes (`source()`, in order) on one line, `: ` between
/// them, each cause left out when the message before it already says it
/// (an error that prints its OS error and also returns it as its source
/// would say it twice).
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    let mut cause = Some(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        cause = c.source();
    }
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_said_once_on_one_line() {
        #[derive(Debug, thiserror::Error)]
        #[error("bundle/manifest.toml: {source}")]
        struct At {
            source: std::io::Error,
        }
        let e = anyhow::Error::new(At {
            source: std::io::Error::other("No space left\non device"),
        })
        .context("writing the bundle");
        assert_eq!(
            one_line(e.as_ref()),
            "writing the bundle: bundle/manifest.toml: No space left on device"
        );
    }
}
