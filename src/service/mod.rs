//! The firmware-style service layer over [`crate::watch`]: what systemd
//! expects of a `Type=notify` unit (readiness, watchdog, status, stopping)
//! and the status server. The camera loop itself knows nothing of it: the
//! service observes the loop through [`crate::watch::Watcher::run_until`]'s
//! `observe` (journald-friendly logs are the binary's, `src/main.rs`).

mod history;
pub mod http;
mod metrics;
mod status;
pub mod systemd;
