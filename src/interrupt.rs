//! Cooperative interruption of long work (encoding, search, mining, training).
//!
//! The REPL (Ctrl-C) and the Jupyter kernel (an `interrupt_request`, or SIGINT) raise one
//! process-wide flag; long loops call [`check`] between units of work and return
//! [`Interrupted`], so the session that started them lives on. A flag rather than a token passed
//! down every call: there is one interactive session per process, and the checks sit deep in the
//! API (an encoder pass, a training step) where threading a token through would touch every
//! signature for no gain.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// The error long work returns when it stops because the user asked it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("interrupted by the user")]
pub struct Interrupted;

/// Asks whatever is running to stop at its next check.
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Forgets a request (done before each new input runs).
pub fn clear() {
    REQUESTED.store(false, Ordering::SeqCst);
}

pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

/// `Err(Interrupted)` once an interrupt was requested.
pub fn check() -> Result<(), Interrupted> {
    if requested() {
        Err(Interrupted)
    } else {
        Ok(())
    }
}

/// Whether an error chain was caused by an interrupt.
pub fn is_interrupt(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|e| e.downcast_ref::<Interrupted>().is_some())
}

extern "C" fn on_sigint(_: libc::c_int) {
    // Only an atomic store: the one thing that is safe in a signal handler.
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Makes SIGINT (Ctrl-C in a terminal, Jupyter's signal interrupt) raise the flag instead of
/// ending the process. Only interactive front ends install it.
pub fn catch_sigint() {
    // SAFETY: installs a handler that only performs an atomic store.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}
