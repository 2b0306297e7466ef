//! Progress and warnings leave the engine through this trait; only front ends print.

/// Receives progress of a long operation. All methods have empty defaults.
pub trait Progress: Send + Sync {
    /// The total work is now known (bytes and items; 0 when unknown).
    fn set_total(&self, bytes: u64, items: u64) {
        let _ = (bytes, items);
    }
    /// Some work was done.
    fn inc(&self, bytes: u64, items: u64) {
        let _ = (bytes, items);
    }
    /// Something the user should know that does not stop the operation.
    fn warn(&self, message: &str) {
        let _ = message;
    }
    /// What is being worked on now.
    fn status(&self, message: &str) {
        let _ = message;
    }
}

/// Progress that goes nowhere.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}
