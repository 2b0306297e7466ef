//! The engine's [`Progress`] shown as an indicatif bar on stderr.
//!
//! The bar is drawn only when stderr is a terminal and neither `--json` nor `--quiet` is given;
//! otherwise progress is silent (with `--verbose`, status lines are printed instead). Warnings are
//! always printed on stderr, above the bar, and remembered so that a command's final report does not
//! repeat them.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tidemark_repo::Progress;

use crate::output::Out;

/// Progress on the terminal.
pub struct Bar {
    bar: ProgressBar,
    drawn: bool,
    verbose: bool,
    by_bytes: AtomicBool,
    items: AtomicU64,
    total_items: AtomicU64,
    warnings: Mutex<Vec<String>>,
}

impl std::fmt::Debug for Bar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bar").field("drawn", &self.drawn).finish_non_exhaustive()
    }
}

const BYTES_TEMPLATE: &str =
    "{spinner} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} {prefix} ETA {eta} {msg}";
const ITEMS_TEMPLATE: &str = "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}";
const SPINNER_TEMPLATE: &str = "{spinner} [{elapsed_precise}] {binary_bytes} {prefix} {msg}";

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl Bar {
    /// A bar for an operation named `what` (`backup`, `check`, ...).
    pub fn new(out: &Out, what: &str) -> Bar {
        let drawn = !out.json && !out.quiet && std::io::stderr().is_terminal();
        let target = if drawn { ProgressDrawTarget::stderr_with_hz(5) } else { ProgressDrawTarget::hidden() };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(style(SPINNER_TEMPLATE));
        bar.set_message(what.to_string());
        if drawn {
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        Bar {
            bar,
            drawn,
            verbose: out.verbose && !out.json,
            by_bytes: AtomicBool::new(false),
            items: AtomicU64::new(0),
            total_items: AtomicU64::new(0),
            warnings: Mutex::new(Vec::new()),
        }
    }

    /// Remove the bar from the screen (before printing the result).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// Whether a warning mentioning `needle` was already printed.
    pub fn warned_about(&self, needle: &str) -> bool {
        self.warnings.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|w| w.contains(needle))
    }

    fn update_prefix(&self) {
        let items = self.items.load(Ordering::Relaxed);
        let total = self.total_items.load(Ordering::Relaxed);
        if total > 0 {
            self.bar.set_prefix(format!("{items}/{total} items"));
        } else if items > 0 {
            self.bar.set_prefix(format!("{items} items"));
        }
    }
}

impl Progress for Bar {
    fn set_total(&self, bytes: u64, items: u64) {
        self.items.store(0, Ordering::Relaxed);
        self.total_items.store(items, Ordering::Relaxed);
        self.bar.reset();
        if bytes > 0 {
            self.by_bytes.store(true, Ordering::Relaxed);
            self.bar.set_style(style(BYTES_TEMPLATE));
            self.bar.set_length(bytes);
        } else if items > 0 {
            self.by_bytes.store(false, Ordering::Relaxed);
            self.bar.set_style(style(ITEMS_TEMPLATE));
            self.bar.set_length(items);
        } else {
            self.by_bytes.store(true, Ordering::Relaxed);
            self.bar.set_style(style(SPINNER_TEMPLATE));
            self.bar.unset_length();
        }
        self.update_prefix();
    }

    fn inc(&self, bytes: u64, items: u64) {
        self.items.fetch_add(items, Ordering::Relaxed);
        if self.by_bytes.load(Ordering::Relaxed) {
            self.bar.inc(bytes);
        } else {
            self.bar.inc(items);
        }
        self.update_prefix();
    }

    fn warn(&self, message: &str) {
        self.warnings.lock().unwrap_or_else(|e| e.into_inner()).push(message.to_string());
        self.bar.suspend(|| eprintln!("warning: {message}"));
    }

    fn status(&self, message: &str) {
        if self.drawn {
            self.bar.set_message(message.to_string());
        } else if self.verbose {
            eprintln!("{message}");
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_when_json_and_remembers_warnings() {
        let out = Out { json: true, quiet: false, verbose: false };
        let bar = Bar::new(&out, "test");
        assert!(!bar.drawn);
        bar.set_total(100, 2);
        bar.inc(50, 1);
        assert_eq!(bar.bar.position(), 50);
        bar.set_total(0, 4);
        bar.inc(10, 1);
        assert_eq!(bar.bar.position(), 1);
        bar.warn("/x/y: unreadable");
        assert!(bar.warned_about("/x/y"));
        assert!(!bar.warned_about("/z"));
    }
}
