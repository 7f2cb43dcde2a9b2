//! `clip-edge`: the board binary. Loads a bundle and classifies frames; the
//! commands live in [`cli`], one file each.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clip_edge::error_line;

use clip_edge::alloc_count::Counting;

/// `out!`, the line printer every command uses.
#[macro_use]
extern crate clip_edge;

mod cli;

#[global_allocator]
static ALLOC: Counting = Counting;

fn main() -> ExitCode {
    init_logger();
    let json = error_line::wants_json();
    let cli = match error_line::parse::<cli::Cli>(json) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            error_line::say(&error_line::one_line(e.as_ref()), json);
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
