//! `clip-edge`: the board binary. Loads a bundle and classifies frames; the
//! commands live in [`cli`], one file each.

use std::process::ExitCode;

use clap::Parser;

use clip_edge::alloc_count::Counting;

/// `out!`, the line printer every command uses.
#[macro_use]
extern crate clip_edge;

mod cli;

#[global_allocator]
static ALLOC: Counting = Counting;

fn main() -> ExitCode {
    init_logger();
    match cli::run(cli::Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            if e.is::<cli::ConfigError>() {
                ExitCode::from(cli::EX_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `RUST_LOG` (default `warn`) to stderr. Under systemd (stderr is the
/// journal): no timestamps of our own, the level as a syslog priority
/// prefix (sd-daemon(3)) so journald keeps it.
fn init_logger() {
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"));
    // ureq-proto's trace level prints raw request headers (a camera's
    // `Authorization` among them), its debug level each step of a call:
    // warnings only, whatever RUST_LOG says.
    logger.filter_module("ureq_proto", log::LevelFilter::Warn);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        logger.format(|buf, r| {
            use std::io::Write as _;
            let prio = match r.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(buf, "<{prio}>{}: {}", r.target(), r.args())
        });
    }
    logger.init();
}

/// `e` and its causes on one line, `: ` between them, each cause left out
/// when the message before it already says it (an error that prints its
/// OS error and also returns it as its source would say it twice).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}
