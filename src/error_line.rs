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

/// Whether the command line asks for JSON (`--json`, `--json-events`): a
/// reader of it gets a failure as JSON too ([`say`]).
pub fn wants_json() -> bool {
    std::env::args_os()
        .skip(1)
        .any(|a| a == "--json" || a == "--json-events")
}

/// A failure as the binaries say it: `error: LINE` on stderr, and with
/// `json` also `{"error": LINE}` on stdout.
pub fn say(line: &str, json: bool) {
    eprintln!("error: {line}");
    if json {
        crate::out!("{}", serde_json::json!({ "error": line }));
    }
}

/// The command line as `T`. `--help`, `--version` and a command given
/// without its subcommand print as clap prints them and exit; one clap
/// refuses is said on one line ([`usage`], [`say`]) and is `Err` with exit
/// status 2.
pub fn parse<T: clap::Parser>(json: bool) -> Result<T, std::process::ExitCode> {
    match T::try_parse() {
        Ok(cli) => Ok(cli),
        Err(e)
            if !e.use_stderr()
                || e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            e.exit()
        }
        Err(e) => {
            say(&usage(&e), json);
            Err(std::process::ExitCode::from(2))
        }
    }
}

/// A command line clap refused, on one line: its error, its tip (a
/// similar argument), and where the command's help is (clap says it over
/// several lines, with the usage).
pub fn usage(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut line = lines
        .next()
        .unwrap_or("")
        .trim_start_matches("error: ")
        .to_string();
    for l in text.lines().map(str::trim) {
        if let Some(tip) = l.strip_prefix("tip: ") {
            line.push_str(&format!(" ({tip})"));
        }
    }
    // `Usage: clip-edge watch [OPTIONS]`: the command's words.
    let command: Vec<&str> = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Usage: "))
        .map(|u| {
            u.split_whitespace()
                .take_while(|w| !w.starts_with(['[', '<', '-']))
                .collect()
        })
        .unwrap_or_default();
    if !command.is_empty() {
        line.push_str(&format!("; see {} --help", command.join(" ")));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_command_line_is_one_line_with_its_tip() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        #[command(name = "clip-edge")]
        enum Cli {
            Classify {
                #[arg(long)]
                bundle: String,
            },
        }
        let e = Cli::try_parse_from(["clip-edge", "classify", "--bundel", "x"]).unwrap_err();
        assert_eq!(
            usage(&e),
            "unexpected argument '--bundel' found (a similar argument exists: '--bundle'); see clip-edge classify --help"
        );
    }

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
