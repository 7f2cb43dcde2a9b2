//! Progress bars for long work (eval here, builds and sensitivity scans in
//! the quantizer): drawn on stderr only when it is a terminal, never under
//! `--json` or in a pipe. And [`out!`](crate::out), the binaries' line
//! printer.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps labelled `what`; hidden unless `enabled` and stderr
/// is a terminal.
pub fn bar(enabled: bool, len: u64, what: &str) -> ProgressBar {
    if !enabled || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>24} [{bar:40}] {pos}/{len} {elapsed_precise} eta {eta}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

/// `println!` for the binaries: ends the process quietly when stdout is
/// closed (`| head`) instead of panicking, and with one line and exit
/// status 1 when it cannot be written (a full disk under `> result.json`),
/// never a success with the output cut short.
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($t)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("error: writing to standard output: {e}");
            std::process::exit(1);
        }
    }};
}
