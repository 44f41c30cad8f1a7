//! Command-line tools should stop quietly when the reader of their output goes away (`cosee-edge classify … |
//! head -1`). Rust ignores SIGPIPE, so each write then fails with BrokenPipe and `println!` panics; restoring the
//! default disposition makes the process end the way `cat` or `grep` do. Called first thing by every binary.

/// Restores the default SIGPIPE disposition (terminate) on Unix; does nothing elsewhere.
pub fn restore_default() {
    #[cfg(unix)]
    // SAFETY: called at the start of `main`, before any thread exists; setting a signal's disposition to SIG_DFL
    // has no other precondition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
